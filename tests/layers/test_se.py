"""SEBlock end to end (paper Eq. 2-4, Table 16) against numpy with the block's own parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.layers.se import SEBlock
from se_flax.layers.se import SESpec
from se_flax.layers.se import upsample_nearest
from tests.layers.random_variables import random_variables


def feature_map(shape=(2, 6, 6, 32), seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def init(spec, x):
  block = SEBlock(spec)
  variables = random_variables(block, x)
  return block, variables, variables['params']


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def fc_numpy(z, p):
  """The excitation of Eq. 3 on the last axis: W2 relu(W1 z + b1) + b2."""
  hidden = np.maximum(np.einsum('...c,cr->...r', z, p['fc1']['kernel']) + p['fc1']['bias'], 0.0)
  return np.einsum('...r,rc->...c', hidden, p['fc2']['kernel']) + p['fc2']['bias']


def test_paper_block_avg_fc_sigmoid():
  x = feature_map()
  block, variables, p = init(SESpec(reduction=4), x)
  z = x.astype(np.float64).mean(axis=(1, 2))
  s = sigmoid(fc_numpy(z, p))
  expected = x * s[:, None, None, :]
  np.testing.assert_allclose(np.asarray(block.apply(variables, x)), expected, rtol=1e-5, atol=1e-6)


def test_no_squeeze_excites_every_position_with_1x1_convs():
  # Table 16's NoSqueeze: the same two FC layers applied at each pixel, no pooling.
  x = feature_map()
  block, variables, p = init(SESpec(reduction=4, squeeze='none'), x)
  s = sigmoid(fc_numpy(x.astype(np.float64), p))
  assert s.shape == x.shape
  np.testing.assert_allclose(np.asarray(block.apply(variables, x)), x * s, rtol=1e-5, atol=1e-6)


def test_gather_gate_covers_its_cell():
  x = feature_map(shape=(2, 4, 4, 32))
  block, variables, p = init(SESpec(reduction=4, squeeze='gather', gather_extent=2), x)
  cells = x.astype(np.float64).reshape(2, 2, 2, 2, 2, 32).mean(axis=(2, 4))
  s = sigmoid(fc_numpy(cells, p))
  # Each gate value scales the 2x2 patch it was pooled from.
  s_full = np.kron(s, np.ones((1, 2, 2, 1)))
  np.testing.assert_allclose(np.asarray(block.apply(variables, x)), x * s_full, rtol=1e-5,
                             atol=1e-6)


def test_gather_gate_on_a_map_the_extent_does_not_divide():
  # 5x5 with extent 2: cells of rows/cols {0,1}, {2,3}, {4}; each gate scales its own cell.
  x = feature_map(shape=(1, 5, 5, 16))
  block, variables, p = init(SESpec(reduction=4, squeeze='gather', gather_extent=2), x)
  x64 = x.astype(np.float64)
  bounds = [(0, 2), (2, 4), (4, 5)]
  expected = np.zeros_like(x64)
  for r0, r1 in bounds:
    for c0, c1 in bounds:
      cell = x64[:, r0:r1, c0:c1]
      s = sigmoid(fc_numpy(cell.mean(axis=(1, 2)), p))
      expected[:, r0:r1, c0:c1] = cell * s[:, None, None, :]
  np.testing.assert_allclose(np.asarray(block.apply(variables, x)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('gate,fn', [('tanh', np.tanh), ('relu', lambda v: np.maximum(v, 0.0))])
def test_other_gates_scale_by_their_own_function(gate, fn):
  x = feature_map()
  block, variables, p = init(SESpec(reduction=4, gate=gate), x)
  s = fn(fc_numpy(x.astype(np.float64).mean(axis=(1, 2)), p))
  np.testing.assert_allclose(np.asarray(block.apply(variables, x)), x * s[:, None, None, :],
                             rtol=1e-5, atol=1e-6)


def test_gate_is_sown_only_when_intermediates_are_mutable():
  x = feature_map()
  block, variables, p = init(SESpec(reduction=4), x)
  # init must not leak the gate into the variables that get checkpointed.
  assert set(jax.eval_shape(lambda a: block.init(jax.random.PRNGKey(0), a), x)) == {'params'}
  y, state = block.apply(variables, x, mutable=['intermediates'])
  (gate,) = state['intermediates']['gate']
  expected = sigmoid(fc_numpy(x.astype(np.float64).mean(axis=(1, 2)), p))
  assert gate.shape == (2, 1, 1, 32)
  np.testing.assert_allclose(np.asarray(gate)[:, 0, 0], expected, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(y), np.asarray(block.apply(variables, x)), rtol=1e-6)
  _, state = block.apply(variables, x, mutable=['batch_stats'])
  assert 'intermediates' not in state


def test_bfloat16_block_scales_in_the_input_dtype_with_a_float32_gate():
  x = jnp.asarray(feature_map(), jnp.bfloat16)
  block = SEBlock(SESpec(reduction=4), dtype=jnp.bfloat16)
  shapes = jax.eval_shape(lambda a: block.init(jax.random.PRNGKey(0), a), x)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))
  variables = random_variables(block, x)
  y, state = block.apply(variables, x, mutable=['intermediates'])
  assert y.dtype == jnp.bfloat16
  assert state['intermediates']['gate'][0].dtype == jnp.float32


# Reduced width ----------------------------------------------------------------------------------


def timm_make_divisible(v, divisor=8, min_value=None, round_limit=0.0):
  """timm.layers.make_divisible; timm's SEModule calls it with round_limit=0."""
  min_value = min_value or divisor
  new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
  if new_v < round_limit * v:
    new_v += divisor
  return new_v


CASES = [(16, 16), (32, 16), (64, 16), (96, 16), (128, 16), (176, 16), (200, 16), (256, 16),
         (1024, 16), (2048, 16), (64, 4), (100, 3), (2048, 32), (30, 4)]


@pytest.mark.parametrize('channels,r', CASES)
def test_floor_rounding_is_c_floordiv_r(channels, r):
  assert SESpec(reduction=r).reduced_width(channels) == channels // r


@pytest.mark.parametrize('channels,r', CASES)
def test_multiple8_rounding_is_timms_make_divisible(channels, r):
  assert SESpec(reduction=r, rounding='multiple8').reduced_width(channels) == \
      timm_make_divisible(channels / r)


def test_multiple8_examples():
  spec = SESpec(rounding='multiple8')
  assert spec.reduced_width(64) == 8  # 4 rounds up to the minimum of 8
  assert spec.reduced_width(256) == 16
  assert spec.reduced_width(200) == 16  # 12.5 -> 16 (nearest multiple, ties up)
  assert spec.reduced_width(176) == 8  # 11 -> 8


def test_min_width_bounds_the_reduced_width_from_below():
  spec = SESpec(reduction=16, min_width=8)
  assert spec.reduced_width(64) == 8
  assert spec.reduced_width(256) == 16
  assert SESpec(reduction=16, rounding='multiple8', min_width=24).reduced_width(256) == 24


def test_block_parameters_follow_the_rounding():
  x = feature_map(shape=(1, 2, 2, 64))
  for spec, width in ((SESpec(), 4), (SESpec(rounding='multiple8'), 8), (SESpec(min_width=6), 6)):
    block = SEBlock(spec)
    p = jax.eval_shape(lambda a, block=block: block.init(jax.random.PRNGKey(0), a), x)['params']
    assert p['fc1']['kernel'].shape == (64, width)
    assert p['fc2']['kernel'].shape == (width, 64)


def test_meanstd_feeds_twice_the_channels_to_fc1():
  x = feature_map()
  block, variables, p = init(SESpec(reduction=4, squeeze='meanstd'), x)
  assert p['fc1']['kernel'].shape == (64, 8)
  assert p['fc2']['kernel'].shape == (8, 32)
  x64 = x.astype(np.float64)
  z = np.concatenate([x64.mean(axis=(1, 2)), x64.std(axis=(1, 2))], axis=-1)
  s = sigmoid(fc_numpy(z, p))
  np.testing.assert_allclose(np.asarray(block.apply(variables, x)), x * s[:, None, None, :],
                             rtol=1e-4, atol=1e-5)


def test_reduction_equal_to_channels_is_allowed_and_larger_raises():
  assert SESpec(reduction=32).reduced_width(32) == 1
  with pytest.raises(ValueError, match=r'reduction=64.*32 channels.*1\.\.32'):
    SESpec(reduction=64).reduced_width(32)
  with pytest.raises(ValueError, match='reduction'):
    init(SESpec(reduction=64), feature_map())


def test_reduction_is_ignored_by_excitations_without_a_bottleneck():
  # eca/ese/identity never use C // r, so an r larger than C must not be an error for them.
  x = jnp.ones((1, 4, 4, 8), jnp.float32)
  for excite in ('eca', 'ese', 'identity'):
    block = SEBlock(SESpec(reduction=32, excite=excite))
    variables = block.init(jax.random.PRNGKey(0), x)
    assert block.apply(variables, x).shape == x.shape
  with pytest.raises(ValueError, match='reduction=32 exceeds the 8 channels'):
    SEBlock(SESpec(reduction=32, excite='fc')).init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize('cells,size', [((1, 1), (5, 7)), ((2, 1), (4, 3)), ((1, 2), (3, 4)),
                                        ((2, 2), (7, 7)), ((4, 4), (7, 7)), ((3, 5), (3, 5))])
def test_upsample_nearest_gives_each_pixel_the_cell_that_covers_it(cells, size):
  # numpy: pixel (i, j) lies in cell (i // ceil(H/h), j // ceil(W/w)).
  (h, w), (height, width) = cells, size
  s = np.random.default_rng(h * 10 + w).normal(size=(2, h, w, 3)).astype(np.float32)
  rows = np.arange(height) // -(-height // h)
  cols = np.arange(width) // -(-width // w)
  expected = s[:, rows][:, :, cols]
  out = np.broadcast_to(np.asarray(upsample_nearest(jnp.asarray(s), (2, height, width, 3))),
                        (2, height, width, 3))
  np.testing.assert_array_equal(out, expected)
