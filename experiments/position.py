"""The SE block after the unit's last conv, or after its 3x3 conv: paper Table 15.

SE_3x3 squeezes the bottleneck's 3x3 output, a quarter of the unit's width in
ResNet-50, so it costs fewer parameters (25.8M against 28.1M). In the basic
units of CIFAR and digits networks the 3x3 position is after the first conv.
"""

from experiments import targets

TITLE = 'SE position in the unit'
TABLES = ('Table 15',)
AXIS = None
BASE = targets.PAPER_ABLATION
SWEEP = [{'model.se.position': p} for p in ('last', '3x3')]
