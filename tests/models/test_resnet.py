"""ImageNet backbone layout: where the stride goes, the stems and their pooling."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.models import registry
from tests.layers.random_variables import random_variables
from tests.models import reference_units as ref
from tests.models.model_shapes import builder
from tests.models.model_shapes import params_of


@pytest.mark.parametrize(
    'name,stride_in_1x1',
    [
        # The paper's (Caffe) ResNets stride the first 1x1 conv; the ResNeXt and SENet-154 models
        # stride the 3x3 conv, as their published code does.
        ('resnet50', True),
        ('resnet101', True),
        ('resnet152', True),
        ('se_resnet50', True),
        ('resnext50_32x4d', False),
        ('se_resnext101_32x4d', False),
        ('senet154', False)
    ])
def test_preset_stride_position(name, stride_in_1x1):
  assert registry.create_model(name, 10).stride_in_1x1 is stride_in_1x1


def test_resnext_32x4d_widths():
  params = params_of('resnext50_32x4d')
  # Stage widths 128, 256, 512, 1024 = 32 groups of 4, 8, 16, 32 channels.
  for stage, per_group in ((1, 4), (2, 8), (3, 16), (4, 32)):
    assert params[f'layer{stage}_1']['conv2']['kernel'].shape == (3, 3, per_group, 32 * per_group)
    assert params[f'layer{stage}_1']['conv3']['kernel'].shape[-1] == 256 * 2 ** (stage - 1)


def stage1_size(model, hw):
  x = jax.ShapeDtypeStruct((1, hw, hw, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  _, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=['intermediates']),
      variables, x)
  return state['intermediates']['layer1_0']['__call__'][0].shape[1]


@pytest.mark.parametrize('hw,expected', [(56, 14), (58, 14), (60, 15), (224, 56)])
def test_caffe_ceil_mode_pooling(hw, expected):
  # SENet-154's 3x3/2 stem conv gives ceil(hw / 2); Caffe's unpadded 3x3/2 max-pool in ceil mode
  # then gives ceil((n - 3) / 2) + 1.
  model = builder('senet154')(stage_sizes=(1, 1, 1, 1), num_classes=10)
  assert stage1_size(model, hw) == expected


@pytest.mark.parametrize('hw,expected', [(56, 14), (58, 15), (224, 56)])
def test_torchvision_padded_pooling(hw, expected):
  # 7x7/2 conv padded 3, then a 3x3/2 max-pool padded 1: floor((n - 1) / 2) + 1 each.
  model = builder('resnet18')(stage_sizes=(1, 1, 1, 1), num_classes=10)
  assert stage1_size(model, hw) == expected


def record(model, variables, x, paths):
  """(input, output) of the calls of the submodules at `paths` ('layer1_0', 'layer1_0/bn1')."""

  def run(v, x):
    seen = {}

    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      path = '/'.join(context.module.scope.path)
      if context.method_name == '__call__' and path in paths:
        seen[path] = (args[0], out)
      return out

    with nn.intercept_methods(interceptor):
      model.apply(v, x)
    return seen

  return jax.tree.map(np.asarray, jax.jit(run)(variables, x))


def max_pool_3x3_s2(x, pad_before, out):
  """3x3/2 max-pool; windows that run past the map (Caffe's ceil mode, or padding) are clipped."""
  n, h, w, c = x.shape
  y = np.empty((n, out, out, c), x.dtype)
  for i in range(out):
    for j in range(out):
      r, q = 2 * i - pad_before, 2 * j - pad_before
      y[:, i, j] = x[:, max(r, 0):min(r + 3, h), max(q, 0):min(q + 3, w)].max(axis=(1, 2))
  return y


@pytest.mark.parametrize('hw', [58, 60])
def test_caffe_ceil_mode_pooling_values(hw):
  model = builder('senet154')(stage_sizes=(1,), num_classes=10)
  x = np.random.default_rng(0).normal(size=(1, hw, hw, 3)).astype(np.float32)
  variables = random_variables(model, x)
  seen = record(model, variables, x, {'stem_bn3', 'layer1_0'})
  stem = np.maximum(seen['stem_bn3'][1], 0.0)
  out = math.ceil((stem.shape[1] - 3) / 2) + 1
  np.testing.assert_array_equal(seen['layer1_0'][0], max_pool_3x3_s2(stem, 0, out))


def test_torchvision_padded_pooling_values():
  model = builder('resnet18')(stage_sizes=(1,), num_classes=10)
  x = np.random.default_rng(0).normal(size=(1, 58, 58, 3)).astype(np.float32)
  variables = random_variables(model, x)
  seen = record(model, variables, x, {'bn1', 'layer1_0'})
  stem = np.maximum(seen['bn1'][1], 0.0)
  out = (stem.shape[1] - 1) // 2 + 1
  np.testing.assert_array_equal(seen['layer1_0'][0], max_pool_3x3_s2(stem, 1, out))


def test_basic_act_before_se_reaches_the_units():
  model = registry.create_model('se_resnet18', 10, basic_act_before_se=True)
  model = model.clone(stage_sizes=(1, 1))
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  variables = random_variables(model, x)
  seen = record(model, variables, x, {'layer1_0', 'layer2_0'})
  for name, stride in (('layer1_0', 1), ('layer2_0', 2)):
    unit = {kind: variables[kind][name] for kind in ('params', 'batch_stats')}
    unit_in, unit_out = seen[name]
    expected = ref.basic(unit_in, unit, stride=stride, mode='standard', act_before_se=True)
    np.testing.assert_allclose(unit_out, expected, rtol=2e-4, atol=2e-4)
