"""The RSB recipes' learning rate, epoch by epoch, against timm's cosine scheduler.

The fixture steps timm's CosineLRScheduler as train.py did when RSB was
trained: created from the recipe's published arguments (rate, epochs, five
warm-up epochs) with that period's defaults (warm-up from 1e-4, a floor of
1e-6, ten cool-down epochs at the floor), one step per epoch. Our schedule is
read at the first and the last update of every epoch, at ImageNet's 625
updates per epoch of batch 2048.
"""

import numpy as np
import pytest

from configs import imagenet
from se_flax.data import datasets
from se_flax.train import optim
from se_flax.train import setup
from tests.recipes import timm_fixtures

FIXTURE = timm_fixtures.meta('schedule')


@pytest.mark.parametrize('recipe', sorted(FIXTURE['recipes']))
def test_the_rate_of_every_epoch_is_timms(recipe):
  timm = FIXTURE['recipes'][recipe]
  config = imagenet.get_config(f'model=resnet50,recipe={recipe}')
  # timm trains the schedule's epochs and then the cool-down.
  assert config.num_epochs == timm['num_epochs']
  steps_per_epoch = datasets.steps_per_epoch(datasets.get('imagenet2012'), config.batch_size)
  schedule = optim.create_schedule(config, steps_per_epoch,
                                   setup.total_steps(config, steps_per_epoch))
  first = np.arange(timm['num_epochs']) * steps_per_epoch
  expected = np.asarray(timm['rates'])
  for offset, where in ((0, 'first'), (steps_per_epoch - 1, 'last')):
    got = np.asarray(schedule(first + offset), np.float64)
    wrong = np.flatnonzero(~np.isclose(got, expected, rtol=1e-5, atol=1e-10))
    assert not wrong.size, (f'{recipe}, {where} update of epochs {wrong[:5].tolist()}: '
                            f'{got[wrong[:5]].tolist()} (ours) {expected[wrong[:5]].tolist()} '
                            '(timm)')
