"""SE blocks put into the plain twin by surgery: the rule, Composer's min_channels, and r.

Every run names the plain network (resnet50, or the target's plain twin) and
lets `model.surgery` place the blocks: 'residual' is the paper's place, so its
run is the SE twin itself; 'convs' puts a block after every convolution with
at least `min_channels` outputs (Composer's rule); the bounds are ones that
every target's network has convolutions at (the CIFAR and digits networks are
16, 32 and 64 wide).
"""

from experiments import targets

TITLE = 'SE by surgery'
TABLES = ()
AXIS = None
BASE = targets.PAPER_ABLATION
PLAIN = {'model.name': 'resnet50'}
SWEEP = [
    {
        **PLAIN, 'model.surgery.where': 'residual'
    },
    *({
        **PLAIN, 'model.surgery.where': 'residual',
        'model.se.reduction': r
    } for r in (4, 8)),
    *({
        **PLAIN, 'model.surgery.where': 'convs',
        'model.surgery.min_channels': c
    } for c in (16, 32, 64)),
]
