"""Residual units with an SE block, recomputed by hand in the order of the paper's Fig. 5."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.layers.norm import BatchNorm
from se_flax.layers.se import SEBlock
from se_flax.layers.se import SESpec
from se_flax.models import blocks
from se_flax.models import unit as unit_lib
from tests.layers.random_variables import init_without_kernels
from tests.layers.random_variables import random_variables
from tests.models import reference_units as ref

CONV = functools.partial(nn.Conv, use_bias=False)
# Eval-mode BN with random running statistics: deterministic, and still not the identity.
NORM = functools.partial(BatchNorm, use_running_average=True)
MODES = [None, 'standard', 'pre', 'post', 'identity']


def spec_for(mode, position='last', reduction=4):
  return None if mode is None else SESpec(reduction=reduction, integration=mode, position=position)


def inputs(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def check(unit, x, reference, seed=1):
  v = random_variables(unit, x, seed=seed)
  y = np.asarray(unit.apply(v, x))
  expected = reference(x, v)
  assert y.shape == expected.shape
  np.testing.assert_allclose(y, expected, rtol=2e-4, atol=2e-4)
  return v


def bottleneck(se, strides=1, planes=16, width=16, groups=4, **kwargs):
  return blocks.Bottleneck(planes, strides, conv=CONV, norm=NORM, act=nn.relu, width=width,
                           first_width=width, groups=groups, se=se, zero_init=False, **kwargs)


@pytest.mark.parametrize('mode', MODES)
def test_bottleneck_integration_modes(mode):
  x = inputs((2, 6, 6, 64))
  check(bottleneck(spec_for(mode)), x, lambda x, v: ref.bottleneck(x, v, groups=4, mode=mode))


def test_bottleneck_se_after_the_3x3_conv():
  x = inputs((2, 6, 6, 64))
  check(bottleneck(spec_for('standard', '3x3')), x,
        lambda x, v: ref.bottleneck(x, v, groups=4, se_3x3=True))


@pytest.mark.parametrize('stride_in_1x1', [True, False])
@pytest.mark.parametrize('downsample_kernel', [1, 3])
def test_bottleneck_projection_unit(stride_in_1x1, downsample_kernel):
  x = inputs((2, 8, 8, 32))
  unit = bottleneck(spec_for('standard'), strides=2, stride_in_1x1=stride_in_1x1,
                    downsample_kernel=downsample_kernel)
  v = check(
      unit, x, lambda x, v: ref.bottleneck(x, v, stride=2, groups=4, stride_in_1x1=stride_in_1x1,
                                           mode='standard'))
  assert v['params']['downsample_conv']['kernel'].shape == (downsample_kernel,) * 2 + (32, 64)


def test_bottleneck_where_the_stride_goes_changes_the_output():
  # The two layouts of section 6 / timm's "v1.5" are different functions of the same weights.
  x = inputs((2, 8, 8, 32))
  caffe = bottleneck(None, strides=2, stride_in_1x1=True)
  v = random_variables(caffe, x)
  torchvision = bottleneck(None, strides=2, stride_in_1x1=False)
  diff = np.asarray(caffe.apply(v, x)) - np.asarray(torchvision.apply(v, x))
  assert np.abs(diff).max() > 1e-2


def basic(se, strides=1, planes=16, shortcut_type='B', **kwargs):
  return blocks.BasicBlock(planes, strides, conv=CONV, norm=NORM, act=nn.relu, se=se,
                           zero_init=False, shortcut_type=shortcut_type, **kwargs)


@pytest.mark.parametrize('mode', MODES)
def test_basic_integration_modes(mode):
  x = inputs((2, 6, 6, 16))
  check(basic(spec_for(mode)), x, lambda x, v: ref.basic(x, v, mode=mode))


def test_basic_se_after_the_first_conv():
  x = inputs((2, 6, 6, 16))
  check(basic(spec_for('standard', '3x3')), x, lambda x, v: ref.basic(x, v, se_3x3=True))


@pytest.mark.parametrize('mode', [None, 'standard', 'identity'])
@pytest.mark.parametrize('strides', [1, 2])
def test_basic_with_activation_before_se(mode, strides):
  x = inputs((2, 8, 8, 16))
  unit = basic(spec_for(mode), strides=strides, act_before_se=True)
  check(unit, x, lambda x, v: ref.basic(x, v, stride=strides, mode=mode, act_before_se=True))


@pytest.mark.parametrize('mode', MODES)
def test_basic_projection_shortcut(mode):
  x = inputs((2, 8, 8, 8))
  check(basic(spec_for(mode), strides=2), x, lambda x, v: ref.basic(x, v, stride=2, mode=mode))


@pytest.mark.parametrize('mode', [None, 'standard', 'identity'])
def test_basic_option_a_shortcut_subsamples_and_zero_pads(mode):
  x = inputs((2, 8, 8, 8))
  unit = basic(spec_for(mode, reduction=2), strides=2, shortcut_type='A')
  v = check(unit, x,
            lambda x, v: ref.basic(x, v, stride=2, mode=mode, shortcut_type='A', out_ch=16))
  # Option A is parameter-free.
  assert 'downsample_conv' not in v['params']


def preact(se, strides=1, planes=16, bottleneck_unit=False):
  return blocks.PreActBlock(planes, strides, conv=CONV, norm=NORM, act=nn.relu,
                            bottleneck=bottleneck_unit, se=se)


@pytest.mark.parametrize('mode', MODES)
def test_preact_wide_integration_modes(mode):
  x = inputs((2, 6, 6, 16))
  check(preact(spec_for(mode)), x, lambda x, v: ref.preact(x, v, mode=mode))


@pytest.mark.parametrize('mode', MODES)
def test_preact_bottleneck_projection_modes(mode):
  x = inputs((2, 8, 8, 16))
  unit = preact(spec_for(mode), strides=2, planes=8, bottleneck_unit=True)
  check(unit, x, lambda x, v: ref.preact(x, v, stride=2, bottleneck_unit=True, mode=mode))


@pytest.mark.parametrize('bottleneck_unit', [False, True])
def test_preact_se_after_the_3x3_conv(bottleneck_unit):
  x = inputs((2, 6, 6, 32))
  unit = preact(spec_for('standard', '3x3'), planes=8 if bottleneck_unit else 32,
                bottleneck_unit=bottleneck_unit)
  check(unit, x, lambda x, v: ref.preact(x, v, bottleneck_unit=bottleneck_unit, se_3x3=True))


def test_padding_is_symmetric_k_over_2_not_xla_same():
  # A stride-2 3x3 conv on an even map: Caffe/PyTorch pad 1 on both sides, XLA's SAME pads
  # 0 before and 1 after, which shifts every output pixel.
  x = inputs((1, 8, 8, 4))
  conv = blocks.conv_padded(CONV, 5, 3, strides=2)
  v = random_variables(conv, x)
  y = np.asarray(conv.apply(v, x))
  np.testing.assert_allclose(y, ref.conv(x, v['params'], stride=2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kind', ['basic', 'bottleneck'])
def test_zero_initialised_unit_starts_as_the_identity(kind):
  # Goyal et al. 2017: the last BN's scale starts at 0, so F(x) = 0 and the unit is relu(x + 0).
  x = inputs((2, 5, 5, 64))
  se = SESpec(reduction=4)
  if kind == 'basic':
    unit = blocks.BasicBlock(64, 1, conv=CONV, norm=NORM, act=nn.relu, se=se)
  else:
    unit = blocks.Bottleneck(16, 1, conv=CONV, norm=NORM, act=nn.relu, width=16, first_width=16,
                             se=se)
  variables = init_without_kernels(unit, x)
  np.testing.assert_array_equal(np.asarray(unit.apply(variables, x)), np.maximum(x, 0.0))


def test_padding_of_a_7x7_stem_is_3_on_every_side():
  x = inputs((1, 16, 16, 3))
  conv = blocks.conv_padded(CONV, 4, 7, strides=2)
  v = random_variables(conv, x)
  y = np.asarray(conv.apply(v, x))
  assert y.shape == (1, 8, 8, 4)
  np.testing.assert_allclose(y, ref.conv(x, v['params'], stride=2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kind', ['basic', 'bottleneck'])
def test_last_scale_starts_at_one_without_zero_init(kind):
  x = inputs((2, 5, 5, 64))
  if kind == 'basic':
    unit, last = blocks.BasicBlock(64, 1, conv=CONV, norm=NORM, act=nn.relu, zero_init=False), 'bn2'
  else:
    unit, last = bottleneck(None), 'bn3'
  scale = unit.init(jax.random.PRNGKey(0), x)['params'][last]['scale']
  np.testing.assert_array_equal(np.asarray(scale), np.ones(scale.shape))


class _Sum(nn.Module):
  """residual_sum with its defaults: x + 3, no SE, no activation."""
  kwargs: dict

  @nn.compact
  def __call__(self, x):
    return unit_lib.residual_sum(self, x, lambda h, _: h * 0 + 3.0, lambda h: h, None, None,
                                 **self.kwargs)


def test_residual_sum_defaults_neither_drop_nor_train():
  x = inputs((4, 2, 2, 3))
  # Training, but no rate given: nothing is dropped. A rate, but no `train`: evaluation,
  # which needs no random numbers.
  for kwargs in ({'train': True}, {'drop_path_rate': 0.5}):
    np.testing.assert_array_equal(np.asarray(_Sum(kwargs).apply({}, x)), x + 3.0)


@pytest.mark.parametrize('mode', ['standard', 'pre', 'post', 'identity'])
def test_se_block_computes_in_the_units_dtype(mode):
  x = inputs((2, 4, 4, 16))
  unit = blocks.BasicBlock(16, 1, conv=CONV, norm=NORM, act=nn.relu, se=spec_for(mode),
                           dtype=jnp.bfloat16)
  dtypes = []

  def record(module, _):
    if isinstance(module, SEBlock):
      dtypes.append(module.dtype)
    return False

  unit.apply(random_variables(unit, x), x, capture_intermediates=record)
  assert dtypes == [jnp.bfloat16]
