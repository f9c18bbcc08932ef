"""Excitations and gates (paper section 3.2, Table 12) against numpy."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.layers import excite as excite_lib
from se_flax.layers.se import SESpec
from tests.layers.random_variables import random_variables


class Excite(nn.Module):
  """Calls one registered excitation on a descriptor z; hosts its parameters."""
  spec: SESpec
  channels: int
  reduced: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    return excite_lib.EXCITATIONS[self.spec.excite](z, self.channels, self.reduced, self.spec, self)


def run(spec, z, reduced=4):
  module = Excite(spec, z.shape[-1], reduced)
  variables = random_variables(module, z)
  return np.asarray(module.apply(variables, z)), variables


def descriptor(shape=(3, 1, 1, 16), seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def num_params(variables):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))


# Gates ------------------------------------------------------------------------------------------

GATES_NUMPY = {
    'sigmoid': lambda x: 1.0 / (1.0 + np.exp(-x)),
    # MobileNetV3's hard sigmoid: ReLU6(x + 3) / 6.
    'hard_sigmoid': lambda x: np.minimum(np.maximum(x + 3.0, 0.0), 6.0) / 6.0,
    'tanh': np.tanh,
    'relu': lambda x: np.maximum(x, 0.0),
}


def test_gate_registry_holds_the_paper_gates():
  assert set(excite_lib.GATES) == set(GATES_NUMPY)


@pytest.mark.parametrize('name', sorted(GATES_NUMPY))
def test_gate_matches_numpy(name):
  x = np.linspace(-8.0, 8.0, 161, dtype=np.float32)
  got = np.asarray(excite_lib.GATES[name](jnp.asarray(x)))
  np.testing.assert_allclose(got, GATES_NUMPY[name](x.astype(np.float64)), rtol=1e-6, atol=1e-7)


def test_hard_sigmoid_saturates_at_plus_minus_three():
  got = np.asarray(excite_lib.GATES['hard_sigmoid'](jnp.array([-3.0, -10.0, 0.0, 3.0, 10.0])))
  np.testing.assert_array_equal(got, [0.0, 0.0, 0.5, 1.0, 1.0])


# Excitations ------------------------------------------------------------------------------------


def test_excitation_registry():
  assert set(excite_lib.EXCITATIONS) == {'fc', 'ese', 'eca', 'identity'}


@pytest.mark.parametrize('bias', [True, False])
def test_fc_is_a_bottleneck_c_to_reduced_to_c(bias):
  z = descriptor()
  logits, variables = run(SESpec(bias=bias), z, reduced=4)
  p = variables['params']
  assert set(p) == {'fc1', 'fc2'}
  assert p['fc1']['kernel'].shape == (16, 4)
  assert p['fc2']['kernel'].shape == (4, 16)
  if bias:
    assert p['fc1']['bias'].shape == (4,) and p['fc2']['bias'].shape == (16,)
    assert num_params(variables) == 2 * 16 * 4 + 4 + 16
  else:
    assert 'bias' not in p['fc1'] and 'bias' not in p['fc2']
    assert num_params(variables) == 2 * 16 * 4
  b1 = p['fc1'].get('bias', np.zeros(4))
  b2 = p['fc2'].get('bias', np.zeros(16))
  hidden = np.maximum(z @ p['fc1']['kernel'] + b1, 0.0)
  np.testing.assert_allclose(logits, hidden @ p['fc2']['kernel'] + b2, rtol=1e-5, atol=1e-6)


def test_fc_acts_per_position_on_spatial_descriptors():
  # On a gather / NoSqueeze descriptor the two layers are 1x1 convolutions.
  z = descriptor(shape=(2, 3, 3, 16))
  logits, variables = run(SESpec(), z, reduced=4)
  p = variables['params']
  hidden = np.maximum(np.einsum('nhwc,cr->nhwr', z, p['fc1']['kernel']) + p['fc1']['bias'], 0.0)
  expected = np.einsum('nhwr,rc->nhwc', hidden, p['fc2']['kernel']) + p['fc2']['bias']
  assert logits.shape == z.shape
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_fc_initialisation_keeps_the_gate_near_one_half():
  # Zero-mean weights: at start the sigmoid gate sits around 0.5, not saturated.
  z = descriptor(shape=(64, 1, 1, 64), seed=1)
  module = Excite(SESpec(), 64, 4)
  logits = np.asarray(module.apply(module.init(jax.random.PRNGKey(0), z), z))
  gate = GATES_NUMPY['sigmoid'](logits)
  assert 0.35 < gate.mean() < 0.65 and gate.min() > 0.01 and gate.max() < 0.99


@pytest.mark.parametrize('bias', [True, False])
def test_ese_is_one_c_to_c_layer(bias):
  z = descriptor()
  logits, variables = run(SESpec(excite='ese', bias=bias), z)
  p = variables['params']
  assert set(p) == {'fc'}
  assert p['fc']['kernel'].shape == (16, 16)
  assert num_params(variables) == 16 * 16 + (16 if bias else 0)
  expected = z @ p['fc']['kernel'] + (p['fc']['bias'] if bias else 0.0)
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


# Kernel sizes of ECA-Net's official implementation (Wang et al. 2020, Eq. 12 with gamma=2, b=1):
# t = int(|(log2 C + 1) / 2|), k = t if t is odd else t + 1.
ECA_KERNELS = {8: 3, 16: 3, 32: 3, 64: 3, 128: 5, 256: 5, 512: 5, 1024: 5, 2048: 7, 4096: 7}


@pytest.mark.parametrize('channels,kernel', sorted(ECA_KERNELS.items()))
def test_eca_kernel_size_follows_eca_net(channels, kernel):
  assert excite_lib.eca_kernel_size(channels) == kernel


def eca_numpy(z, w):
  """Zero-padded cross-correlation of each descriptor with w along the channel axis."""
  k = len(w)
  flat = z.reshape(-1, z.shape[-1]).astype(np.float64)
  padded = np.pad(flat, ((0, 0), (k // 2, k // 2)))
  out = np.stack([padded[:, i:i + flat.shape[1]] * w[i] for i in range(k)]).sum(axis=0)
  return out.reshape(z.shape)


@pytest.mark.parametrize('channels,shape', [(64, (3, 1, 1)), (256, (2, 1, 1)), (128, (2, 2, 2))])
def test_eca_is_a_1d_convolution_across_channels(channels, shape):
  z = descriptor(shape=shape + (channels,))
  logits, variables = run(SESpec(excite='eca'), z)
  kernel = variables['params']['conv']['kernel']
  k = ECA_KERNELS[channels]
  assert kernel.shape == (k, 1, 1)
  assert num_params(variables) == k
  np.testing.assert_allclose(logits, eca_numpy(z, kernel[:, 0, 0]), rtol=1e-5, atol=1e-6)


def test_identity_excitation_passes_the_descriptor_through():
  z = descriptor()
  logits, variables = run(SESpec(excite='identity'), z)
  assert not jax.tree.leaves(variables)
  np.testing.assert_array_equal(logits, z)


def test_fc_kernels_are_uniform_with_the_fan_in_bound():
  # PyTorch/Caffe 1x1-conv init: U(-b, b) with b = sqrt(3 / fan_in). flax's default, a
  # truncated normal of the same variance, reaches past b.
  channels, reduced = 256, 64
  z = descriptor(shape=(2, 1, 1, channels))
  params = Excite(SESpec(), channels, reduced).init(jax.random.PRNGKey(3), z)['params']
  for name, fan_in in (('fc1', channels), ('fc2', reduced)):
    kernel = np.asarray(params[name]['kernel'])
    bound = np.sqrt(3.0 / fan_in)
    assert np.abs(kernel).max() <= bound
    # A uniform draw fills the interval: its extremes come close to the bound.
    assert np.abs(kernel).max() > 0.98 * bound
    np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3.0), rtol=0.05)


@pytest.mark.parametrize('excite', ['fc', 'ese'])
def test_excitation_computes_in_the_module_dtype(excite):
  z = jnp.asarray(descriptor(), jnp.bfloat16)
  module = Excite(SESpec(excite=excite), 16, 4, dtype=jnp.bfloat16)
  variables = module.init(jax.random.PRNGKey(0), z)
  assert module.apply(variables, z).dtype == jnp.bfloat16
  # Parameters stay float32 (docs/design.md#numerics).
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
