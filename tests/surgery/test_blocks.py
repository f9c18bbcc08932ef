"""The SE block in both Flax APIs: one set of operators, the same outputs for the same weights.

And identity start: a block whose excitation's last layer starts at zero and
whose gate takes its identity form (layers/excite.py) returns its input
unchanged at step 0, for every gate, and still has a gradient there.
"""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from se_flax.errors import ConfigError
from se_flax.layers import excite as excite_lib
from se_flax.layers import squeeze as squeeze_lib
from se_flax.layers.se import SEBlock
from se_flax.layers.se import SEBlockNNX
from se_flax.layers.se import SESpec
from tests.layers.random_variables import random_variables

CHANNELS = 16


def feature_map(shape=(2, 4, 4, CHANNELS), seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def specs():
  """One spec per squeeze, per excitation and per gate: every registered operator is used."""
  out = [
      SESpec(reduction=4, squeeze=name, gather_extent=2 if name == 'gather' else 0, excite='fc')
      for name in squeeze_lib.SQUEEZES
  ]
  out += [SESpec(reduction=4, excite=name) for name in excite_lib.EXCITATIONS]
  out += [SESpec(reduction=4, gate=name) for name in excite_lib.GATES]
  out += [SESpec(reduction=4, bias=False), SESpec(reduction=4, rounding='multiple8')]
  return out


def nnx_with(params, spec, **kwargs):
  block = SEBlockNNX(CHANNELS, spec, rngs=nnx.Rngs(1), **kwargs)
  nnx.update(block, nnx.State(jax.tree.map(jnp.asarray, params)))
  return block


@pytest.mark.parametrize('spec', specs(), ids=lambda s: f'{s.squeeze}-{s.excite}-{s.gate}-{s.bias}'
                         f'-{s.rounding}')
def test_linen_and_nnx_blocks_agree_for_the_same_weights(spec):
  x = feature_map()
  linen = SEBlock(spec)
  variables = random_variables(linen, x)
  block = SEBlockNNX(CHANNELS, spec, rngs=nnx.Rngs(1))
  # The same parameter names and shapes: weights move between the APIs as they are.
  assert (jax.tree.map(jnp.shape,
                       nnx.state(block, nnx.Param).to_pure_dict()) == jax.tree.map(
                           jnp.shape, dict(variables.get('params', {}))))
  block = nnx_with(variables.get('params', {}), spec)
  np.testing.assert_array_equal(np.asarray(block(x)), np.asarray(linen.apply(variables, x)))


def test_the_nnx_block_sows_its_gate_only_under_capture():
  x = feature_map()
  block = SEBlockNNX(CHANNELS, SESpec(reduction=4), rngs=nnx.Rngs(0))
  block(x)
  assert 'gate' not in nnx.state(block).to_pure_dict()
  y, intermediates = nnx.capture(block, nnx.Intermediate)(x)
  gate = intermediates.to_pure_dict()['gate'][0]
  assert gate.shape == (2, 1, 1, CHANNELS)
  np.testing.assert_allclose(np.asarray(y), np.asarray(x * gate), rtol=1e-6)
  block(x)
  assert 'gate' not in nnx.state(block).to_pure_dict()


def test_the_nnx_block_trains_under_nnx_jit():
  x = feature_map()
  block = SEBlockNNX(CHANNELS, SESpec(reduction=4), rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(block, optax.sgd(0.5), wrt=nnx.Param)
  before = np.asarray(block.fc2.bias[...]).copy()

  @nnx.jit
  def step(block, optimizer):
    loss, grads = nnx.value_and_grad(lambda b: jnp.mean(b(x) ** 2))(block)
    optimizer.update(block, grads)
    return loss

  assert step(block, optimizer) > step(block, optimizer)
  assert np.abs(np.asarray(block.fc2.bias[...]) - before).max() > 0


ZERO_START_SPECS = [
    SESpec(reduction=4, excite=e, gate=g, bias=b)
    for e in sorted(excite_lib.ZERO_START)
    for g in excite_lib.GATES
    for b in (True, False)
    if not (e == 'eca' and not b)
]


@pytest.mark.parametrize('spec', ZERO_START_SPECS, ids=lambda s: f'{s.excite}-{s.gate}-{s.bias}')
def test_identity_start_returns_the_input_and_has_a_gradient(spec):
  x = feature_map()
  block = SEBlock(spec, identity_start=True)
  variables = block.init(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(np.asarray(block.apply(variables, x)), np.asarray(x))
  nnx_block = SEBlockNNX(CHANNELS, spec, identity_start=True, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(np.asarray(nnx_block(x)), np.asarray(x))
  # The last layer learns from the first step: the identity form's slope at 0 is not zero.
  target = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), jnp.float32)
  grads = jax.grad(lambda p: jnp.sum(block.apply({'params': p}, x) * target))(variables['params'])
  last = grads['conv' if spec.excite == 'eca' else ('fc' if spec.excite == 'ese' else 'fc2')]
  assert np.abs(np.asarray(last['kernel'])).max() > 0


@pytest.mark.parametrize('gate', sorted(excite_lib.GATES))
def test_each_identity_gate_is_one_at_zero_with_a_positive_slope(gate):
  fn = excite_lib.IDENTITY_GATES[gate]
  assert float(fn(jnp.float32(0.0))) == 1.0
  assert float(jax.grad(fn)(jnp.float32(0.0))) > 0


def test_identity_start_needs_an_excitation_with_a_last_layer():
  x = feature_map()
  with pytest.raises(ConfigError, match="excite='identity' has none"):
    SEBlock(SESpec(excite='identity'), identity_start=True).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ConfigError, match="excite='identity' has none"):
    SEBlockNNX(CHANNELS, SESpec(excite='identity'), identity_start=True, rngs=nnx.Rngs(0))
