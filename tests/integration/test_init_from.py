"""Training from imported weights (config.init_from) onto a new label set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.convert import writer
from se_flax.models import registry
from tests.integration import harness


@pytest.fixture(scope='module')
def imported_weights(tmp_path_factory):
  """cifar_resnet20 variables for 1000 classes, in the layout `python -m se_flax.convert` writes.

  The values are random draws, not a fresh initialisation: a run with the
  default seed starts from its own initialisation, which must not pass for
  loaded weights.
  """
  model = registry.create_model('cifar_resnet20', 1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)),
                                             train=False))
  rng = np.random.RandomState(7)
  variables = jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32),
                           dict(shapes))
  directory = tmp_path_factory.mktemp('imported')
  writer.save_variables(directory, variables,
                        {'model': 'cifar_resnet20', 'num_classes': 1000, 'overrides': {}})
  flat = jax.tree_util.tree_flatten_with_path(variables)[0]
  return directory, {'/'.join(str(k.key) for k in path): v for path, v in flat}


def test_starts_from_the_imported_weights_with_a_new_head(imported_weights, digits_data, jax_cache,
                                                          tmp_path):
  directory, saved = imported_weights
  code, out, err = harness.run(tmp_path / 'run', digits_data, '--config.num_train_steps=2',
                               f'--config.init_from={directory}', f'--out={tmp_path}/start.npz',
                               cache_dir=jax_cache, script='tests/integration/init_probe.py')
  assert code == 0, harness.describe(code, out, err)
  assert f'Initialised from {directory}' in out
  start = dict(np.load(tmp_path / 'start.npz'))
  assert sorted(start) == sorted(saved)
  for key, value in start.items():
    if key.startswith('params/fc/'):
      assert value.shape[-1] == 10 and saved[key].shape[-1] == 1000  # re-initialised for 10 classes
    else:
      np.testing.assert_array_equal(value, saved[key], err_msg=key)
  assert 'fc' in err and 'classifier' in err  # the warning names what was re-initialised
  assert [r['step'] for r in harness.metric_lines(tmp_path / 'run') if r['split'] == 'eval'] == [2]


def test_weights_of_another_model_are_refused(imported_weights, digits_run):
  directory, _ = imported_weights
  code, out, err = digits_run('--config.model.name=se_cifar_resnet20',
                              f'--config.init_from={directory}')
  assert code == 2, harness.describe(code, out, err)
  assert "holds 'cifar_resnet20' weights" in err and "set config.model.name='cifar_resnet20'" in err


def test_a_directory_without_weights_is_refused(digits_run, tmp_path):
  code, out, err = digits_run(f'--config.init_from={tmp_path}')
  assert code == 2, harness.describe(code, out, err)
  assert 'is not an imported-weights directory' in err and 'model.json' in err
