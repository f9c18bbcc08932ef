"""SE blocks in one stage only, or in all stages: paper Table 13.

Stage indices are 0-based: the paper's "SE_Stage_2" (conv2_x) is stage 0,
"SE_Stage_3" stage 1, "SE_Stage_4" stage 2; stage 3 (conv5_x) alone is not in
the paper. CIFAR and digits networks have three stages (0..2), so the stage 3
run is dropped there. The plain network is the lower reference.
"""

from experiments import targets

TITLE = 'SE stages'
TABLES = ('Table 13',)
AXIS = None
BASE = targets.PAPER_ABLATION
SWEEP = [
    {
        'model.name': 'resnet50'
    },
    *({
        'model.se.stages': (i,)
    } for i in range(4)),
    {
        'model.se.stages': None
    },  # every stage (the base config's default)
]
