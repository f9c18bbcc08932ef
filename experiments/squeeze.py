"""The squeeze operator: paper Table 11 (avg, max) and Table 16 (NoSqueeze), and variants.

avg is the paper's global average pooling, max global max pooling; none keeps
every position's descriptor, so the excitation acts as 1x1 convolutions
(NoSqueeze). avgmax, gem (learned generalised mean), meanstd (mean and
standard deviation) and gather (Gather-Excite: average pooling over e x e
cells, gate upsampled) are not in the paper. A gather extent must divide every
SE stage's feature map; runs whose extent does not are dropped (on ImageNet
the last stage is 7x7, so no extent fits all stages there).
"""

from experiments import targets

TITLE = 'Squeeze operator'
TABLES = ('Table 11', 'Table 16')
AXIS = 'model.se.squeeze'
BASE = targets.PAPER_ABLATION
SWEEP = [
    {
        'model.se.squeeze': 'avg'
    },
    {
        'model.se.squeeze': 'max'
    },
    {
        'model.se.squeeze': 'avgmax'
    },
    {
        'model.se.squeeze': 'gem'
    },
    {
        'model.se.squeeze': 'meanstd'
    },
    *({
        'model.se.squeeze': 'gather',
        'model.se.gather_extent': e
    } for e in (2, 4, 8)),
    {
        'model.se.squeeze': 'none'
    },
]
