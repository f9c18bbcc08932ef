"""Every list of allowed values has one home, and the upfront config check reaches all of it.

For each list: every value in it passes `check.check_config`, a value outside
it fails with a message that names the field and the list, and no second
module of se_flax spells the list out again.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

from configs import digits
from se_flax import check
from se_flax import models
from se_flax.data import datasets
from se_flax.errors import ConfigError
from se_flax.layers import excite
from se_flax.layers import se
from se_flax.layers import squeeze
from se_flax.train import optim
from se_flax.train import step

ROOT = pathlib.Path(__file__).resolve().parents[1]

# field -> (the allowed values, a value outside them, fields that let every value pass)
LISTS = {
    # Not cached: ImageNet's decoded images do not fit in memory, and the check says so.
    'dataset.name': (datasets.NAMES, 'mnist', {
        'dataset.cache': False
    }),
    # ImageNet's input: every network takes it (the cost of a trace does not depend on the size).
    'model.name': (tuple(models.list_models()), 'se_resnet51', {
        'dataset.name': 'imagenet2012',
        'dataset.image_size': 224,
        'dataset.eval_resize': 256,
        'dataset.cache': False
    }),
    'model.dtype': (tuple(models.DTYPES), 'float8', {}),
    'optimizer.name': (optim.OPTIMIZERS, 'adam', {}),
    'schedule.name': (optim.SCHEDULES, 'linear', {}),
    'lr_scaling': (optim.LR_SCALINGS, 'log', {}),
    # ImageNet: the only data set whose training crop samples a window.
    'dataset.crop_sampler': (datasets.CROP_SAMPLERS, 'torchvision', {}),
    'dataset.loader': (tuple(datasets.LOADERS), 'pytorch', {}),
    'nan_policy': (step.NAN_POLICIES, 'ignore', {}),
    'loss': (step.LOSSES, 'hinge', {}),
    'ema.select_best': (step.EMA_SELECT_BEST, 'last', {
        'ema.decay': 0.999
    }),
    'model.se.squeeze': (tuple(squeeze.SQUEEZES), 'median', {}),
    'model.se.excite': (tuple(excite.EXCITATIONS), 'mlp', {}),
    'model.se.gate': (tuple(excite.GATES), 'swish', {}),
    'model.se.integration': (se.INTEGRATIONS, 'inside', {}),
    'model.se.position': (se.POSITIONS, 'first', {}),
    'model.se.rounding': (se.ROUNDINGS, 'ceil', {}),
    # Extents up to 8 need feature maps of 8 and more: 32x32 inputs.
    'model.se.gather_extent': (se.GATHER_EXTENTS, 3, {
        'model.se.squeeze': 'gather',
        'dataset.image_size': 32
    }),
}


def config_with(**changes):
  config = digits.get_config()
  for key, value in changes.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def run_check(config):
  check.check_config(config, num_devices=1, num_processes=1)


@pytest.mark.parametrize('field, value',
                         [(f, v) for f, (values, _, _) in LISTS.items() for v in values])
def test_every_allowed_value_passes_the_check(field, value):
  run_check(config_with(**{**LISTS[field][2], field: value}))


@pytest.mark.parametrize('field', list(LISTS))
def test_a_value_outside_the_list_is_refused_naming_the_list(field):
  values, bad, context = LISTS[field]
  with pytest.raises(ConfigError) as info:
    run_check(config_with(**{**context, field: bad}))
  message = str(info.value)
  assert f'config.{field}={bad!r}' in message
  if isinstance(bad, int):
    assert str(list(values)) in message
  for value in values:
    assert str(value) in message, (value, message)


def _literal_collections(path):
  """frozensets of the constants of every all-constant tuple, list, set or dict-key literal."""
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
      items = node.elts
    elif isinstance(node, ast.Dict):
      items = node.keys
    else:
      continue
    if items and all(isinstance(i, ast.Constant) for i in items):
      yield frozenset(i.value for i in items)


def _modules_with(predicate):
  return sorted(
      str(p.relative_to(ROOT)) for p in (ROOT / 'se_flax').rglob('*.py') if any(
          predicate(c) for c in _literal_collections(p)))


@pytest.mark.parametrize('values, home', [
    (step.NAN_POLICIES, 'se_flax/train/step.py'),
    (optim.OPTIMIZERS, 'se_flax/train/optim.py'),
    (optim.SCHEDULES, 'se_flax/train/optim.py'),
    (tuple(models.DTYPES), 'se_flax/models/registry.py'),
    (se.INTEGRATIONS, 'se_flax/layers/se.py'),
    (se.POSITIONS, 'se_flax/layers/se.py'),
    (se.ROUNDINGS, 'se_flax/layers/se.py'),
    (se.GATHER_EXTENTS, 'se_flax/layers/squeeze.py'),
    (tuple(excite.GATES), 'se_flax/layers/excite.py'),
], ids=lambda v: v if isinstance(v, str) else '-'.join(map(str, v)))
def test_each_list_is_written_in_one_module(values, home):
  assert _modules_with(lambda c: c == frozenset(values)) == [home]


def test_the_dtypes_are_listed_once():
  assert _modules_with(lambda c: 'bfloat16' in c) == ['se_flax/models/registry.py']


def test_config_se_fields_are_the_spec_fields():
  assert dict(digits.get_config().model.se) == {
      **{
          f: getattr(se.SESpec(), f) for f in se.SESpec.__dataclass_fields__
      }, 'reduction': 4
  }


def test_checking_a_config_imports_no_tensorflow():
  code = ('import sys\n'
          'from configs import digits\n'
          'from se_flax import check\n'
          'check.check_config(digits.get_config(), num_devices=1, num_processes=1)\n'
          'print("tensorflow" in sys.modules)\n')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(ROOT)}
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ['False'], result.stdout


def test_the_model_is_also_tried_at_the_test_resolution():
  # A gather extent of 8 needs feature maps of 8 and more: 32x32 trains, 8x8 cannot be tested.
  fits = {'model.se.squeeze': 'gather', 'model.se.gather_extent': 8, 'dataset.image_size': 32}
  run_check(config_with(**fits, **{'dataset.eval_image_size': 40}))
  with pytest.raises(check.ModelInputError, match=r'on \(8, 8, 1\) inputs'):
    run_check(config_with(**fits, **{'dataset.eval_image_size': 8}))


@pytest.mark.parametrize('recipe', ['paper', 'rsb_a1', 'rsb_a2', 'rsb_a3'])
def test_every_named_recipe_passes_the_check(recipe):
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  run_check(imagenet.get_config(f'model=se_resnet50,recipe={recipe}'))
