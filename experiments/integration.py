"""Where the SE block meets the residual unit: paper Table 14 and Fig. 5.

standard: on the residual branch, before the addition; pre: before the
residual unit; post: after the addition (after the final ReLU); identity: on
the identity branch, in parallel with the residual branch.
"""

from experiments import targets

TITLE = 'Integration strategy'
TABLES = ('Table 14',)
AXIS = None
BASE = targets.PAPER_ABLATION
SWEEP = [{'model.se.integration': m} for m in ('standard', 'pre', 'post', 'identity')]
