"""Where the SE block sits (paper Fig. 5, Tables 13-15): module names, widths and gate extremes."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.layers.norm import BatchNorm
from se_flax.layers.se import SESpec
from se_flax.models import blocks
from tests.layers.random_variables import random_variables
from tests.models import reference_units as ref
from tests.models.model_shapes import params_of

CONV = functools.partial(nn.Conv, use_bias=False)
NORM = functools.partial(BatchNorm, use_running_average=True)


def inputs(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def param_shapes(module, shape):
  variables = jax.eval_shape(lambda a: module.init(jax.random.PRNGKey(0), a),
                             jax.ShapeDtypeStruct(shape, jnp.float32))
  return jax.tree.map(lambda leaf: leaf.shape, variables['params'])


# One unit ---------------------------------------------------------------------------------------

# 48 input channels, 24-wide 3x3 conv, 64 output channels: each place the SE can take has its own
# width, so fc1's shape tells where the block went. r=4.
SE_WIDTH = {
    ('standard', 'last'): 64,
    ('pre', 'last'): 48,
    ('post', 'last'): 64,
    ('identity', 'last'): 64,
    ('standard', '3x3'): 24
}


@pytest.mark.parametrize('mode,position', sorted(SE_WIDTH))
def test_bottleneck_se_gates_the_channels_of_its_place(mode, position):
  unit = blocks.Bottleneck(16, 1, conv=CONV, norm=NORM, act=nn.relu, width=24, first_width=24,
                           se=SESpec(reduction=4, integration=mode, position=position))
  shapes = param_shapes(unit, (1, 4, 4, 48))
  c = SE_WIDTH[mode, position]
  assert shapes['se'] == {
      'fc1': {
          'kernel': (c, c // 4),
          'bias': (c // 4,)
      },
      'fc2': {
          'kernel': (c // 4, c),
          'bias': (c,)
      }
  }


def test_unit_without_se_has_no_se_module():
  unit = blocks.Bottleneck(16, 1, conv=CONV, norm=NORM, act=nn.relu, width=24, first_width=24)
  assert set(param_shapes(unit, (1, 4, 4, 48))) == {
      'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3', 'downsample_conv', 'downsample_bn'
  }


@pytest.mark.parametrize('mode,position,width', [('standard', 'last', 512), ('pre', 'last', 256),
                                                 ('post', 'last', 512), ('identity', 'last', 512),
                                                 ('standard', '3x3', 128)])
def test_se_resnet50_first_unit_of_stage_2(mode, position, width):
  # layer2_0 takes 256 channels, runs its 3x3 conv at 128 and emits 512.
  shapes = params_of('se_resnet50', se=SESpec(integration=mode, position=position))
  assert shapes['layer2_0']['se']['fc1']['kernel'].shape == (width, width // 16)
  # Every one of the 16 units carries exactly one SE block.
  units = [k for k in shapes if k.startswith('layer')]
  assert len(units) == 16 and all('se' in shapes[k] for k in units)


def test_stages_restrict_se_to_the_named_stages():
  shapes = params_of('se_resnet50', se=SESpec(stages=(1, 3)))
  with_se = sorted(k for k in shapes if 'se' in shapes[k])
  assert with_se == [
      'layer2_0', 'layer2_1', 'layer2_2', 'layer2_3', 'layer4_0', 'layer4_1', 'layer4_2'
  ]


def test_preact_pre_gates_the_units_input():
  shapes = params_of('se_preact_resnet164', se=SESpec(integration='pre'))
  # The first unit sees the 16-channel stem; later units of stage 1 see 64 channels.
  assert shapes['layer1_0']['se']['fc1']['kernel'].shape == (16, 1)
  assert shapes['layer1_1']['se']['fc1']['kernel'].shape == (64, 4)
  assert shapes['layer2_0']['se']['fc1']['kernel'].shape == (64, 4)


# Gate extremes ----------------------------------------------------------------------------------


def with_constant_gate(variables, logit):
  """Zero fc2 kernel and a large bias: sigmoid gives ~1 (logit +30) or ~0 (logit -30) everywhere."""
  params = jax.tree.map(np.array, variables['params'])
  params['se']['fc2']['kernel'][:] = 0.0
  params['se']['fc2']['bias'][:] = logit
  return {**variables, 'params': params}


MODES = ['standard', 'pre', 'post', 'identity']


def unit_pair(mode, position='last'):
  """A Bottleneck with an SE block, and the same unit without one, on an identity shortcut."""

  def make(se):
    return blocks.Bottleneck(16, 1, conv=CONV, norm=NORM, act=nn.relu, width=16, first_width=16,
                             se=se, zero_init=False)

  return make(SESpec(reduction=4, integration=mode, position=position)), make(None)


@pytest.mark.parametrize('mode,position', [(m, 'last') for m in MODES] + [('standard', '3x3')])
def test_gate_of_one_leaves_the_plain_unit(mode, position):
  x = inputs((2, 5, 5, 64))
  unit, plain = unit_pair(mode, position)
  v = with_constant_gate(random_variables(unit, x), 30.0)
  without_se = {**v, 'params': {k: p for k, p in v['params'].items() if k != 'se'}}
  np.testing.assert_allclose(np.asarray(unit.apply(v, x)), np.asarray(plain.apply(without_se, x)),
                             rtol=1e-5, atol=1e-5)


def test_gate_of_zero_on_the_branch_leaves_the_shortcut():
  x = inputs((2, 5, 5, 64))
  unit, _ = unit_pair('standard')
  v = with_constant_gate(random_variables(unit, x), -30.0)
  np.testing.assert_allclose(np.asarray(unit.apply(v, x)), np.maximum(x, 0.0), atol=1e-6)


def test_gate_of_zero_on_the_identity_leaves_the_branch():
  x = inputs((2, 5, 5, 64))
  unit, _ = unit_pair('identity')
  v = with_constant_gate(random_variables(unit, x), -30.0)
  branch, _ = ref.bottleneck_parts(v)
  expected = np.maximum(branch(x.astype(np.float64)), 0.0)
  np.testing.assert_allclose(np.asarray(unit.apply(v, x)), expected, rtol=1e-4, atol=1e-4)


def test_gate_of_zero_after_the_add_silences_the_unit():
  x = inputs((2, 5, 5, 64))
  unit, _ = unit_pair('post')
  v = with_constant_gate(random_variables(unit, x), -30.0)
  np.testing.assert_allclose(np.asarray(unit.apply(v, x)), 0.0, atol=1e-6)


def test_gate_of_zero_before_the_unit_feeds_the_branch_zeros():
  x = inputs((2, 5, 5, 64))
  unit, _ = unit_pair('pre')
  v = with_constant_gate(random_variables(unit, x), -30.0)
  branch, _ = ref.bottleneck_parts(v)
  # The shortcut still carries x; the branch sees an all-zero map and adds its BN offsets.
  expected = np.maximum(x + branch(np.zeros(x.shape)), 0.0)
  np.testing.assert_allclose(np.asarray(unit.apply(v, x)), expected, rtol=1e-4, atol=1e-4)
