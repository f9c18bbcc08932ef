"""SE's gain under the paper's 2017 recipe and under "ResNet strikes back" A3.

ResNet-50 and SE-ResNet-50 under `recipe=paper` and `recipe=rsb_a3`
(configs/imagenet.py; docs/recipes.md gives every value and its source). The
question is whether the SE block's 1.5-point gain of Table 2 survives modern
training, where the plain network already gains about 3 points. Any reduction
ratio: `--set=model.se.reduction=8`. On digits, configs/digits.py takes the
same recipe names and trains with the recipe's pieces at its own scale.

The report puts the published figures beside each run: Table 2 of the SE
paper for `paper`, RSB Table 1 for the plain ResNet-50 under A1-A3
(experiments/rsb_reference.py). No SE-ResNet-50 figure under RSB's
procedures is published there, so that cell stays empty.
"""

from experiments import rsb_reference
from experiments import targets

TITLE = 'SE under the paper recipe and under ResNet strikes back A3'
TABLES = rsb_reference.TABLES
AXIS = 'arg.recipe'
BASE = targets.Base(config='configs/imagenet.py', arg='')
RECIPES = ('paper', 'rsb_a3')
SWEEP = [{
    'model.name': model,
    'arg.recipe': recipe
} for recipe in RECIPES for model in ('resnet50', 'se_resnet50')]
