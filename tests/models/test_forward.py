"""Forward passes of each family at small size: shapes, dtypes, batch statistics, zero init."""

import functools

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.models import registry
from tests.layers.random_variables import init_without_kernels
from tests.layers.random_variables import random_variables
from tests.models import model_shapes
from tests.models import reference_units as ref

NUM_CLASSES = 10


def images(hw=32, batch=2, seed=0):
  return np.random.default_rng(seed).normal(size=(batch, hw, hw, 3)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def setup(name, hw=32, **overrides):
  model = registry.create_model(name, NUM_CLASSES, **overrides)
  return model, random_variables(model, images(hw))


@functools.lru_cache(maxsize=None)
def eval_apply(name, **overrides):
  return jax.jit(setup(name, **overrides)[0].apply)


@functools.lru_cache(maxsize=None)
def train_apply(name, **overrides):
  model = setup(name, **overrides)[0]
  return jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))


@functools.lru_cache(maxsize=None)
def init_constants(name, **overrides):
  """The model and what its `init` sets, with numpy kernels (see `init_without_kernels`)."""
  model = registry.create_model(name, NUM_CLASSES, **overrides)
  return model, init_without_kernels(model, images())


@pytest.mark.parametrize(
    'name',
    ['se_resnet18', 'se_resnext50_32x4d', 'cifar_resnet20', 'se_cifar_resnet20', 'se_wrn16_8'])
def test_forward_pass(name):
  _, variables = setup(name)
  logits = eval_apply(name)(variables, images())
  assert logits.shape == (2, NUM_CLASSES) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  # Two different images must not collapse onto one output.
  assert np.abs(np.asarray(logits[0] - logits[1])).max() > 1e-4


@pytest.mark.parametrize('name', ['se_resnet50', 'senet154', 'se_preact_resnet164'])
def test_larger_models_trace_to_one_logit_per_class(name):
  logits, variables = model_shapes.traced(name)
  assert logits.shape == (1, model_shapes.classes_of(name)) and logits.dtype == jnp.float32
  assert set(variables) == {'params', 'batch_stats'}


def test_senet154_trains_with_dropout_before_the_classifier():
  model = registry.create_model('senet154', 1000)
  assert model.dropout == 0.2
  _, variables = model_shapes.traced('senet154')
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  logits, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'], rngs=
                               {'dropout': jax.random.PRNGKey(1)}), variables, x)
  assert logits.shape == (2, 1000)
  assert jax.tree.structure(state['batch_stats']) == jax.tree.structure(variables['batch_stats'])


def test_senet154_stem_and_projections():
  params = model_shapes.params_of('senet154')
  # Appendix: three 3x3 stem convs (64, 64, 128); the first 1x1 conv is half the 3x3 width
  # (128 of 256), whose 64 groups then see 2 channels each; 3x3 stride-2 projections after the
  # first stage.
  assert [params[f'stem_conv{i}']['kernel'].shape for i in (1, 2, 3)] == [(3, 3, 3, 64),
                                                                          (3, 3, 64, 64),
                                                                          (3, 3, 64, 128)]
  assert params['layer1_0']['conv1']['kernel'].shape == (1, 1, 128, 128)
  assert params['layer1_0']['conv2']['kernel'].shape == (3, 3, 2, 256)
  assert params['layer1_0']['downsample_conv']['kernel'].shape == (1, 1, 128, 256)
  assert params['layer2_0']['downsample_conv']['kernel'].shape == (3, 3, 256, 512)
  assert params['layer4_0']['conv1']['kernel'].shape == (1, 1, 1024, 1024)
  assert params['layer4_0']['conv2']['kernel'].shape == (3, 3, 16, 2048)


def test_train_mode_updates_every_batch_statistic():
  _, variables = setup('se_cifar_resnet20')
  x = images()
  logits, state = train_apply('se_cifar_resnet20')(variables, x)
  assert np.all(np.isfinite(logits))
  old = traverse_util.flatten_dict(variables['batch_stats'])
  new = traverse_util.flatten_dict(state['batch_stats'])
  assert old.keys() == new.keys()
  for key in old:
    assert np.abs(np.asarray(new[key]) - old[key]).max() > 1e-6, key
  # The stem BN sees conv1(x): its running mean moves a tenth of the way to the batch mean.
  h = ref.conv(x, variables['params']['conv1'])
  np.testing.assert_allclose(new['bn1',
                                 'mean'], 0.9 * old['bn1', 'mean'] + 0.1 * h.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(new['bn1', 'var'],
                             0.9 * old['bn1', 'var'] + 0.1 * h.var(axis=(0, 1, 2), ddof=1),
                             rtol=1e-4, atol=1e-5)
  eval_logits = eval_apply('se_cifar_resnet20')(variables, x)
  assert np.abs(np.asarray(logits - eval_logits)).max() > 1e-4


def test_bfloat16_compute_keeps_float32_params_statistics_and_logits():
  _, variables = setup('se_cifar_resnet20')
  model = registry.create_model('se_cifar_resnet20', NUM_CLASSES, dtype='bfloat16')
  x = images()
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  _, state = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']),
                            variables, x)
  assert {leaf.dtype for leaf in jax.tree.leaves(state)} == {jnp.dtype(jnp.float32)}

  logits, state = jax.jit(
      lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=['intermediates']))(
          variables, x)
  assert logits.dtype == jnp.float32
  inter = state['intermediates']
  for unit in ('layer1_0', 'layer2_0', 'layer3_2'):
    assert inter[unit]['__call__'][0].dtype == jnp.bfloat16, unit
    assert inter[unit]['se']['__call__'][0].dtype == jnp.bfloat16, unit
    assert inter[unit]['conv1']['__call__'][0].dtype == jnp.bfloat16, unit
  # bfloat16 keeps 8 significant bits: close to the float32 network, but not equal to it.
  logits32 = eval_apply('se_cifar_resnet20')(variables, x)
  scale = np.abs(np.asarray(logits32)).max()
  assert 0 < np.abs(np.asarray(logits - logits32)).max() < 0.05 * scale


def bn_scales(params):
  """(unit, module, scale, is the unit's last BN) for every BN inside a residual unit."""
  for unit, modules in params.items():
    if unit.startswith('layer'):
      last = 'bn3' if 'bn3' in modules else 'bn2'
      for module, leaves in modules.items():
        if 'scale' in leaves:
          yield unit, module, np.asarray(leaves['scale']), module == last


@pytest.mark.parametrize('name', ['resnet18', 'se_resnet50', 'se_cifar_resnet20'])
def test_zero_init_residual_zeroes_each_units_last_bn_scale(name):
  _, variables = init_constants(name)
  scales = list(bn_scales(variables['params']))
  assert sum(last for *_, last in scales) == len({unit for unit, *_ in scales})
  for unit, module, scale, last in scales:
    np.testing.assert_array_equal(scale, 0.0 if last else 1.0, err_msg=f'{unit}/{module}')


@pytest.mark.parametrize('name', ['resnet18', 'se_cifar_resnet20'])
def test_without_zero_init_every_bn_scale_is_one(name):
  _, variables = init_constants(name, zero_init_residual=False)
  for unit, module, scale, _ in bn_scales(variables['params']):
    np.testing.assert_array_equal(scale, 1.0, err_msg=f'{unit}/{module}')


def test_untrained_units_pass_their_input_through():
  model, variables = init_constants('se_cifar_resnet20')
  _, state = jax.jit(
      lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=['intermediates']))(
          variables, images())
  out = {
      k: np.asarray(v['__call__'][0])
      for k, v in state['intermediates'].items()
      if k.startswith('layer')
  }
  # Identity shortcuts: a zero branch leaves relu(x) = x, since x is itself a ReLU output.
  for stage in (1, 2, 3):
    for j in (1, 2):
      np.testing.assert_array_equal(out[f'layer{stage}_{j}'], out[f'layer{stage}_{j - 1}'])
  # Option-A shortcuts at the stage transitions: subsample and zero-pad the channels.
  for stage, prev in ((2, 'layer1_2'), (3, 'layer2_2')):
    x = out[prev][:, ::2, ::2, :]
    c = x.shape[-1]
    expected = np.concatenate(
        [np.zeros(x.shape[:3] + (c // 2,)), x,
         np.zeros(x.shape[:3] + (c // 2,))], axis=-1)
    np.testing.assert_array_equal(out[f'layer{stage}_0'], expected)
