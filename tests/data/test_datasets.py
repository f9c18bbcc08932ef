"""The data set registry: the one home of every data set fact, readable without TensorFlow."""

import os
import re
import subprocess
import sys

import pytest

from configs import default
from se_flax import errors
from se_flax.data import augment
from se_flax.data import datasets
from se_flax.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Where a literal data set name may appear in se_flax/ and experiments/, with why.
NAME_ALLOWED = {
    # The registry itself.
    'se_flax/data/datasets.py': None,
    # The tfds builder of the embedded data set registers under its name.
    'se_flax/data/digits.py': None,
    # Sweep targets (`--dataset` of the sweep command): each names a config file
    # and a recipe, keyed and labelled by the data set it runs on.
    'experiments/targets.py': 6,
}
_NAME = re.compile(r"""(['"])(%s)\1""" % '|'.join(map(re.escape, datasets.NAMES)))


def _python(code):
  env = {**os.environ, 'PYTHONPATH': ROOT}
  return subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                        text=True, check=True).stdout.strip()


def _config(name='digits', **overrides):
  cfg = default.get_base_config().dataset
  cfg.name = name
  if name == 'digits':
    cfg.image_size = 8
  for key, value in overrides.items():
    setattr(cfg, key, value)
  return cfg


def test_literal_dataset_names_only_in_the_registry():
  found = {}
  for top in ('se_flax', 'experiments'):
    for folder, _, files in os.walk(os.path.join(ROOT, top)):
      for file in files:
        if file.endswith('.py'):
          path = os.path.join(folder, file)
          with open(path, encoding='utf-8') as f:
            hits = len(_NAME.findall(f.read()))
          if hits:
            found[os.path.relpath(path, ROOT)] = hits
  unexpected = {
      path: hits
      for path, hits in found.items()
      if path not in NAME_ALLOWED or NAME_ALLOWED[path] not in (None, hits)
  }
  assert not unexpected, ('data set names outside se_flax/data/datasets.py: ask '
                          f'datasets.get(name) instead ({unexpected})')


def test_registry_and_check_config_import_no_tensorflow():
  out = _python('import sys\n'
                'import se_flax.data, se_flax.data.datasets as d\n'
                'from configs import default\n'
                'cfg = default.get_base_config().dataset\n'
                'cfg.shuffle_buffer = 0\n'
                'try:\n'
                '  d.check_config(cfg)\n'
                'except d.ConfigError as e:\n'
                '  print(e)\n'
                'print("tensorflow" in sys.modules)')
  assert out.splitlines() == ['config.dataset.shuffle_buffer=0 must be an int >= 1', 'False']


def test_hide_gpus_from_tensorflow_leaves_it_no_gpu():
  out = _python('import se_flax.data\n'
                'se_flax.data.hide_gpus_from_tensorflow()\n'
                'import tensorflow as tf\n'
                'print(tf.config.get_visible_devices("GPU"))')
  assert out.splitlines()[-1] == '[]'


def test_specs_are_consistent():
  assert datasets.NAMES == tuple(datasets.DATASETS)
  for name, spec in datasets.DATASETS.items():
    assert spec.name == name and datasets.get(name) is spec
    assert spec.input_shape() == (spec.image_size, spec.image_size, spec.channels)
    if spec.synthetic:  # generated: no files to prepare, nothing to augment
      assert spec.preparation == 'none' and not spec.jpeg and not spec.manual_files
      continue
    assert spec.preparation in sources._PREPARE  # pylint: disable=protected-access
    assert bool(spec.manual_files) == (spec.preparation == 'manual')
    assert spec.train_augment in augment.TRAIN and spec.eval_augment in augment.EVAL
    assert spec.input_shape() == (spec.image_size, spec.image_size, spec.channels)


def test_unknown_name_is_a_config_error():
  with pytest.raises(errors.ConfigError, match=r"config.dataset.name='mnist'.*known: \['digits'"):
    datasets.get('mnist')
  with pytest.raises(errors.ConfigError, match="'mnist'"):
    datasets.check_config(_config('mnist'))


@pytest.mark.parametrize('name,field,value,message', [
    ('digits', 'image_size', 0, 'config.dataset.image_size=0 must be a positive int'),
    ('digits', 'image_size', -3, 'config.dataset.image_size=-3 must be a positive int'),
    ('digits', 'shuffle_buffer', 0, 'config.dataset.shuffle_buffer=0 must be an int >= 1'),
    ('digits', 'prefetch', -1, 'config.dataset.prefetch=-1 must be an int >= 0'),
    ('imagenet2012', 'eval_resize', 200,
     'config.dataset.eval_resize=200 must be an int >= config.dataset.image_size=224'),
    ('imagenet2012', 'cache', True, 'config.dataset.cache=True is not supported for '
     'imagenet2012: decoded images differ in size and do not fit in memory; allowed for '
     'digits, cifar10, cifar100'),
])
def test_check_config_names_field_value_and_rule(name, field, value, message):
  with pytest.raises(errors.ConfigError) as e:
    datasets.check_config(_config(name, **{field: value}))
  assert str(e.value).startswith(message)


def test_check_config_accepts_defaults_and_returns_the_spec():
  assert datasets.check_config(_config('digits', cache=True)) is datasets.get('digits')
  assert datasets.check_config(_config('imagenet2012')) is datasets.get('imagenet2012')
  # eval_resize only matters where evaluation resizes then crops.
  assert datasets.check_config(_config('digits', eval_resize=1)).name == 'digits'
