"""Training from imported weights (config.init_from): the layout of model.json, a new label set."""

import dataclasses
import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from configs import digits
from se_flax import models
from se_flax.convert import writer
from se_flax.layers.se import SESpec
from se_flax.models import registry
from se_flax.train import setup as setup_lib
from tests.integration import harness


@pytest.fixture(scope='module')
def imported_weights(tmp_path_factory):
  """cifar_resnet20 variables for 1000 classes, in the layout `python -m se_flax.convert` writes.

  The values are random draws, not a fresh initialisation: a run with the
  default seed starts from its own initialisation, which must not pass for
  loaded weights.
  """
  model = registry.create_model('cifar_resnet20', 1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(
      (1, 8, 8, 1)), train=False))
  rng = np.random.RandomState(7)
  variables = jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32),
                           dict(shapes))
  return _imported(tmp_path_factory.mktemp('imported'), variables, {
      'model': 'cifar_resnet20',
      'num_classes': 1000,
      'overrides': {}
  })


def _flat(variables):
  """{'params/conv_init/kernel': array, ...}, the keys init_probe.py writes."""
  leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
  return {'/'.join(str(k.key) for k in path): v for path, v in leaves}


def _imported(directory, variables, model_json):
  """(directory, flat variables) of weights written as `python -m se_flax.convert` writes them."""
  writer.save_variables(directory, variables, model_json)
  return directory, _flat(variables)


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


# A layout that differs from every default of config.model: the stride on the 3x3
# convolution (torchvision "v1.5"), another BN epsilon and another SE block.
LAYOUT = {
    'stride_in_1x1': False,
    'bn_epsilon': 1e-3,
    'se': dataclasses.asdict(SESpec(reduction=8, rounding='multiple8'))
}


def _random_variables(model, shape, seed):
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(
      (1,) + shape), train=False))
  rng = np.random.RandomState(seed)
  # Random draws everywhere: zero-initialised last BN scales would hide the residual branches.
  return jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), dict(shapes))


def test_the_network_follows_the_layout_in_model_json(tmp_path):
  (tmp_path / writer.VARIABLES).mkdir()
  (tmp_path / writer.MODEL_JSON).write_text(
      json.dumps({
          'model': 'se_resnet50',
          'num_classes': 1000,
          'overrides': LAYOUT
      }))
  config = default.get_base_config()
  config.model.name, config.init_from = 'se_resnet50', str(tmp_path)
  built = models.from_config(config, 10)
  expected = registry.create_model('se_resnet50', 10, stride_in_1x1=False, bn_epsilon=1e-3,
                                   se=SESpec(reduction=8, rounding='multiple8'))
  config.init_from = ''
  default_layout = models.from_config(config, 10)

  shape = (32, 32, 3)
  variables = _random_variables(expected, shape, seed=3)
  built_shapes = jax.eval_shape(lambda: built.init(jax.random.PRNGKey(0), jnp.zeros(
      (1,) + shape), train=False))
  assert jax.tree.map(np.shape, dict(built_shapes)) == jax.tree.map(np.shape, variables)
  x = np.random.RandomState(4).normal(size=(2,) + shape).astype(np.float32)
  logits = built.apply(variables, x, train=False)
  np.testing.assert_allclose(logits, expected.apply(variables, x, train=False), rtol=1e-5)
  # The config's own layout is another network: the SE widths differ, so its variables do too.
  default_shapes = jax.eval_shape(
      lambda: default_layout.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape), train=False))
  assert jax.tree.map(np.shape, dict(default_shapes)) != jax.tree.map(np.shape, variables)


@pytest.fixture(scope='module')
def imported_se_weights(tmp_path_factory):
  """se_cifar_resnet20 variables of another SE block than configs/digits.py's (r=4, biases)."""
  se = SESpec(reduction=2, bias=False)
  layout = {'bn_epsilon': 1e-3, 'se': dataclasses.asdict(se)}
  model = registry.create_model('se_cifar_resnet20', 10, bn_epsilon=1e-3, se=se)
  variables = _random_variables(model, (8, 8, 1), seed=8)
  return _imported(tmp_path_factory.mktemp('imported_se'), variables, {
      'model': 'se_cifar_resnet20',
      'num_classes': 10,
      'overrides': layout
  })


def test_a_run_starts_from_the_layout_of_model_json(imported_se_weights, digits_data, tmp_path):
  # The run's own set-up and step 0 (what loop.restore_or_init starts a new run from); the
  # first test runs main.py end to end from imported weights.
  directory, saved = imported_se_weights
  config = digits.get_config()
  config.model.name, config.init_from = 'se_cifar_resnet20', str(directory)
  config.dataset.data_dir = str(digits_data)
  state = setup_lib.setup(config, str(tmp_path)).initial_state()
  start = _flat({'params': state.params, 'batch_stats': state.batch_stats})
  assert sorted(start) == sorted(saved)
  for key, value in start.items():
    np.testing.assert_array_equal(np.asarray(value.addressable_data(0)), saved[key], err_msg=key)


def test_surgery_starts_from_a_plain_networks_weights(digits_data, tmp_path):
  # Plain weights into the network surgery makes of the same preset: every plain variable is
  # loaded, the SE blocks keep their own (identity) start, and nothing else is left out.
  plain = registry.create_model('cifar_resnet20', 10)
  directory, saved = _imported(tmp_path / 'plain', _trained_like(plain, (8, 8, 1), seed=5), {
      'model': 'cifar_resnet20',
      'num_classes': 10,
      'overrides': {}
  })
  config = digits.get_config()
  config.model.name, config.init_from = 'cifar_resnet20', str(directory)
  config.model.surgery.where, config.model.surgery.identity_start = 'residual', True
  config.dataset.data_dir = str(digits_data)
  run = setup_lib.setup(config, str(tmp_path / 'run'))
  state = run.initial_state()
  start = _flat({'params': state.params, 'batch_stats': state.batch_stats})
  se_paths = sorted(k for k in start if '/se/' in k)
  assert len(se_paths) > 0 and sorted(set(start) - set(se_paths)) == sorted(saved)
  for key, value in saved.items():
    np.testing.assert_array_equal(np.asarray(start[key].addressable_data(0)), value, err_msg=key)
  fresh = _flat({'params': run.fresh_state().params})
  for key in se_paths:
    np.testing.assert_array_equal(np.asarray(start[key].addressable_data(0)),
                                  np.asarray(fresh[key].addressable_data(0)), err_msg=key)
  # Identity start: the surgery-made network computes what the imported plain one does.
  x = np.random.RandomState(6).normal(size=(2, 8, 8, 1)).astype(np.float32)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  np.testing.assert_allclose(run.model.apply(variables, x, train=False),
                             plain.apply(dict(saved_tree(saved)), x, train=False), rtol=1e-5,
                             atol=1e-5)


def _trained_like(model, shape, seed):
  """The model's own initialisation (finite through 20 layers), with every BN scale drawn in
  [0.5, 1.5] so that no residual branch starts at zero."""
  variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1,) + shape), train=False)
  rng = np.random.RandomState(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, v: rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
      if path[-1].key == 'scale' else np.asarray(v), dict(variables))


def saved_tree(flat):
  """The nested variables of a `_flat` dictionary."""
  return flax.traverse_util.unflatten_dict(flat, sep='/')
