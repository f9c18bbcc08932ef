"""Squeeze operators (paper section 3.1, Tables 11 and 16) against numpy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.layers import squeeze as squeeze_lib
from se_flax.layers.se import SESpec


class Squeeze(nn.Module):
  """Calls one registered squeeze; the module only hosts parameters such as GeM's p."""
  spec: SESpec

  @nn.compact
  def __call__(self, x):
    return squeeze_lib.SQUEEZES[self.spec.squeeze].fn(x, self.spec, self)


def run(spec, x, params=None):
  module = Squeeze(spec)
  variables = module.init(jax.random.PRNGKey(0), x)
  if params is not None:
    variables = {'params': params}
  return np.asarray(module.apply(variables, x)), variables


def feature_map(shape=(2, 8, 8, 5), seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_registry_holds_the_documented_operators():
  assert set(squeeze_lib.SQUEEZES) == {'avg', 'max', 'avgmax', 'gem', 'meanstd', 'gather', 'none'}


def test_avg_is_global_average_pooling():
  x = feature_map()
  z, variables = run(SESpec(squeeze='avg'), x)
  assert z.shape == (2, 1, 1, 5)
  np.testing.assert_allclose(z, x.mean(axis=(1, 2), keepdims=True), rtol=1e-6, atol=1e-6)
  # A parameter-free operator must not add variables to the SE block.
  assert not jax.tree.leaves(variables)


def test_max_is_global_max_pooling():
  x = feature_map()
  z, _ = run(SESpec(squeeze='max'), x)
  assert z.shape == (2, 1, 1, 5)
  np.testing.assert_array_equal(z, x.max(axis=(1, 2), keepdims=True))


def test_avgmax_is_the_mean_of_average_and_max():
  x = feature_map()
  z, _ = run(SESpec(squeeze='avgmax'), x)
  expected = 0.5 * (x.mean(axis=(1, 2), keepdims=True) + x.max(axis=(1, 2), keepdims=True))
  assert z.shape == (2, 1, 1, 5)
  np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-6)


def gem_numpy(x, p):
  x = x.astype(np.float64)
  return np.mean(x ** p, axis=(1, 2), keepdims=True) ** (1.0 / p)


def test_gem_learns_p_initialised_to_three():
  # GeM is defined on non-negative activations (post-ReLU feature maps).
  x = np.abs(feature_map()) + 0.05
  z, variables = run(SESpec(squeeze='gem'), x)
  assert float(variables['params']['gem_p']) == 3.0
  assert z.shape == (2, 1, 1, 5)
  np.testing.assert_allclose(z, gem_numpy(x, 3.0), rtol=1e-5)


@pytest.mark.parametrize('p', [1.0, 2.5, 6.0])
def test_gem_uses_the_p_it_is_given(p):
  x = np.abs(feature_map(seed=1)) + 0.05
  z, _ = run(SESpec(squeeze='gem'), x, params={'gem_p': jnp.float32(p)})
  np.testing.assert_allclose(z, gem_numpy(x, p), rtol=1e-5)


def test_gem_with_p_one_is_average_pooling_and_large_p_approaches_max():
  x = np.abs(feature_map(seed=2)) + 0.05
  z1, _ = run(SESpec(squeeze='gem'), x, params={'gem_p': jnp.float32(1.0)})
  np.testing.assert_allclose(z1, x.mean(axis=(1, 2), keepdims=True), rtol=1e-5)
  z_big, _ = run(SESpec(squeeze='gem'), x, params={'gem_p': jnp.float32(60.0)})
  # The power mean of 64 values is within a factor 64**(1/p) of their max.
  mx = x.max(axis=(1, 2), keepdims=True)
  assert np.all(z_big <= mx * (1 + 1e-5)) and np.all(z_big >= mx * 64 ** (-1 / 60) * (1 - 1e-5))


def test_gem_gives_finite_descriptors_for_negative_inputs():
  # Pre-activations can be negative; a real power of a negative base would be NaN.
  x = feature_map(seed=3)
  z, _ = run(SESpec(squeeze='gem'), x, params={'gem_p': jnp.float32(2.5)})
  assert np.all(np.isfinite(z))
  np.testing.assert_allclose(z, gem_numpy(np.maximum(x, 1e-6), 2.5), rtol=1e-4)


def test_meanstd_emits_mean_then_std_per_channel():
  x = feature_map() * np.arange(1, 6, dtype=np.float32) + np.arange(5, dtype=np.float32)
  z, _ = run(SESpec(squeeze='meanstd'), x)
  assert z.shape == (2, 1, 1, 10)
  assert squeeze_lib.SQUEEZES['meanstd'].width_factor == 2
  np.testing.assert_allclose(z[..., :5], x.mean(axis=(1, 2), keepdims=True), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(z[..., 5:], x.std(axis=(1, 2), keepdims=True), rtol=1e-4)


def gather_numpy(x, e):
  # Cells start every e positions; the edge cells hold what is left of the map.
  n, h, w, c = x.shape
  rows, cols = -(-h // e), -(-w // e)
  out = np.zeros((n, rows, cols, c), np.float64)
  for i in range(rows):
    for j in range(cols):
      out[:, i, j] = x[:, i * e:(i + 1) * e, j * e:(j + 1) * e].mean(axis=(1, 2))
  return out


def test_gather_extent_zero_is_global_average():
  x = feature_map()
  z, _ = run(SESpec(squeeze='gather', gather_extent=0), x)
  assert z.shape == (2, 1, 1, 5)
  np.testing.assert_allclose(z, x.mean(axis=(1, 2), keepdims=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('extent', [2, 4, 8])
def test_gather_averages_extent_by_extent_cells(extent):
  x = feature_map()
  z, _ = run(SESpec(squeeze='gather', gather_extent=extent), x)
  assert z.shape == (2, 8 // extent, 8 // extent, 5)
  np.testing.assert_allclose(z, gather_numpy(x, extent), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('extent', [2, 4])
def test_gather_on_a_map_the_extent_does_not_divide(extent):
  # ImageNet's last stage is 7x7: edge cells are partial and average what they hold.
  x = feature_map(shape=(2, 7, 7, 3))
  z, _ = run(SESpec(squeeze='gather', gather_extent=extent), x)
  assert z.shape == (2, -(-7 // extent), -(-7 // extent), 3)
  np.testing.assert_allclose(z, gather_numpy(x, extent), rtol=1e-5, atol=1e-6)


def test_gather_extent_larger_than_the_map_raises():
  x = feature_map(shape=(1, 6, 6, 3))
  with pytest.raises(ValueError, match='gather_extent') as info:
    run(SESpec(squeeze='gather', gather_extent=8), x)
  # 6x6 admits extents 2 and 4 (and the global 0), not 8.
  assert '[2, 4]' in str(info.value)


def test_none_keeps_every_position():
  x = feature_map()
  z, _ = run(SESpec(squeeze='none'), x)
  assert z.shape == x.shape
  np.testing.assert_array_equal(z, x)


def bf16_reference(name, x):
  mean = x.mean(axis=(1, 2), keepdims=True)
  if name == 'avgmax':
    return 0.5 * (mean + x.max(axis=(1, 2), keepdims=True))
  return mean  # 'avg', and the first half of 'meanstd'


@pytest.mark.parametrize('name', ['avg', 'avgmax', 'meanstd'])
def test_reductions_of_bfloat16_inputs_are_float32_accurate(name):
  # Values near 64 are spaced 0.5 apart in bfloat16: a bfloat16 sum of 256 of them would drift.
  x = (64.0 + feature_map(shape=(1, 16, 16, 3))).astype(jnp.bfloat16)
  z, _ = run(SESpec(squeeze=name), x)
  assert z.dtype == np.float32
  expected = bf16_reference(name, np.asarray(x, np.float64))
  np.testing.assert_allclose(z[..., :3], expected, rtol=1e-6)
