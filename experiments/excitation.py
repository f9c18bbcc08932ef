"""The excitation and its gate: paper Table 12 (sigmoid, tanh, ReLU), and variants.

The paper's excitation is FC(C -> C/r), ReLU, FC(C/r -> C) followed by a
sigmoid; Table 12 replaces the sigmoid by tanh or ReLU. hard_sigmoid is the
piecewise-linear sigmoid of MobileNetV3; ese (one C -> C layer, VoVNet-v2's
eSE) and eca (a 1-D convolution across channels, ECA-Net) replace the FC pair
and keep the sigmoid gate.
"""

from experiments import targets

TITLE = 'Excitation and gate'
TABLES = ('Table 12',)
AXIS = None
BASE = targets.PAPER_ABLATION
SWEEP = [
    *({
        'model.se.gate': g
    } for g in ('sigmoid', 'tanh', 'relu', 'hard_sigmoid')),
    {
        'model.se.excite': 'ese'
    },
    {
        'model.se.excite': 'eca'
    },
]
