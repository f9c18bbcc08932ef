"""Reduction ratio r of the excitation's bottleneck: paper Table 10.

SE-ResNet-50 on ImageNet with r in {2, 4, 8, 16, 32}, beside the plain
ResNet-50. The paper finds accuracy flat from r = 2 to 16 while parameters
fall from 45.7M to 28.1M, and a small loss at r = 32. Where a stage has fewer
channels than r (CIFAR and digits networks start at 16), the run is dropped.
"""

from experiments import targets

TITLE = 'Reduction ratio r'
TABLES = ('Table 10',)
AXIS = 'model.se.reduction'
BASE = targets.PAPER_ABLATION
SWEEP = [
    {
        'model.name': 'resnet50'
    },  # the network without SE blocks
    *({
        'model.se.reduction': r
    } for r in (2, 4, 8, 16, 32)),
]
