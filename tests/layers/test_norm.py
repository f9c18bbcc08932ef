"""BatchNorm with global or per-group statistics against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.layers.norm import BatchNorm

EPS = 1e-5


def activations(shape=(8, 4, 4, 3), seed=0):
  rng = np.random.default_rng(seed)
  # Per-channel offsets and scales so that a wrong reduction axis cannot go unnoticed.
  return (rng.normal(size=shape) * [0.5, 2.0, 3.0] + [1.0, -2.0, 5.0]).astype(np.float32)


def variables_for(features=3, seed=1):
  rng = np.random.default_rng(seed)
  return {
      'params': {
          'scale': rng.uniform(0.5, 1.5, features).astype(np.float32),
          'bias': rng.normal(size=features).astype(np.float32)
      },
      'batch_stats': {
          'mean': rng.normal(size=features).astype(np.float32),
          'var': rng.uniform(0.5, 2.0, features).astype(np.float32)
      },
  }


def normalise(x, mean, var, scale, bias):
  return (x - mean) / np.sqrt(var + EPS) * scale + bias


def test_variables_match_flax_batchnorm_layout():
  x = activations()
  variables = BatchNorm().init(jax.random.PRNGKey(0), x)
  assert jax.tree.map(np.shape, variables) == \
      {'params': {'scale': (3,), 'bias': (3,)}, 'batch_stats': {'mean': (3,), 'var': (3,)}}
  np.testing.assert_array_equal(variables['params']['scale'], 1.0)
  np.testing.assert_array_equal(variables['batch_stats']['mean'], 0.0)
  np.testing.assert_array_equal(variables['batch_stats']['var'], 1.0)
  zero = BatchNorm(scale_init=jax.nn.initializers.zeros).init(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(zero['params']['scale'], 0.0)


def test_training_normalises_with_batch_statistics():
  x = activations()
  v = variables_for()
  y, _ = BatchNorm().apply(v, x, mutable=['batch_stats'])
  x64 = x.astype(np.float64)
  expected = normalise(x64, x64.mean(axis=(0, 1, 2)), x64.var(axis=(0, 1, 2)), v['params']['scale'],
                       v['params']['bias'])
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)


def test_running_statistics_use_momentum_and_unbiased_variance():
  x = activations()
  v = variables_for()
  _, state = BatchNorm(momentum=0.8).apply(v, x, mutable=['batch_stats'])
  x64 = x.astype(np.float64)
  old = v['batch_stats']
  np.testing.assert_allclose(state['batch_stats']['mean'],
                             0.8 * old['mean'] + 0.2 * x64.mean(axis=(0, 1, 2)), rtol=1e-5)
  # ddof=1 over the 8*4*4 = 128 values of each channel, as Caffe and PyTorch store it.
  np.testing.assert_allclose(state['batch_stats']['var'],
                             0.8 * old['var'] + 0.2 * x64.var(axis=(0, 1, 2), ddof=1), rtol=1e-5)


def test_two_updates_compose():
  x1, x2 = activations(seed=2), activations(seed=3)
  v = variables_for()
  bn = BatchNorm(momentum=0.9)
  _, s1 = bn.apply(v, x1, mutable=['batch_stats'])
  _, s2 = bn.apply({'params': v['params'], **s1}, x2, mutable=['batch_stats'])
  mean = v['batch_stats']['mean']
  for x in (x1, x2):
    mean = 0.9 * mean + 0.1 * x.astype(np.float64).mean(axis=(0, 1, 2))
  np.testing.assert_allclose(s2['batch_stats']['mean'], mean, rtol=1e-5)


def test_init_does_not_move_the_running_statistics():
  variables = BatchNorm().init(jax.random.PRNGKey(0), activations())
  np.testing.assert_array_equal(variables['batch_stats']['mean'], 0.0)
  np.testing.assert_array_equal(variables['batch_stats']['var'], 1.0)


def test_eval_uses_running_statistics_and_leaves_them_alone():
  x = activations()
  v = variables_for()
  y, state = BatchNorm(use_running_average=True).apply(v, x, mutable=['batch_stats'])
  expected = normalise(x.astype(np.float64), v['batch_stats']['mean'], v['batch_stats']['var'],
                       v['params']['scale'], v['params']['bias'])
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)
  for key in ('mean', 'var'):
    np.testing.assert_array_equal(state['batch_stats'][key], v['batch_stats'][key])


def test_groups_have_their_own_statistics():
  x = activations()
  v = variables_for()
  y, state = BatchNorm(group_size=2, momentum=0.0).apply(v, x, mutable=['batch_stats'])
  x64 = x.astype(np.float64)
  expected = np.concatenate([
      normalise(g, g.mean(axis=(0, 1, 2)), g.var(axis=(0, 1, 2)), v['params']['scale'],
                v['params']['bias']) for g in np.split(x64, 4)
  ])
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)
  # With momentum 0 the running statistics are the batch's: group means and unbiased group
  # variances, averaged over the groups (per-device BN with averaged statistics).
  groups = np.split(x64, 4)
  np.testing.assert_allclose(state['batch_stats']['mean'],
                             np.mean([g.mean(axis=(0, 1, 2)) for g in groups], axis=0), rtol=1e-5)
  np.testing.assert_allclose(state['batch_stats']['var'],
                             np.mean([g.var(axis=(0, 1, 2), ddof=1) for g in groups], axis=0),
                             rtol=1e-5)


def test_grouped_output_differs_from_whole_batch_output():
  x = activations()
  v = variables_for()
  whole, _ = BatchNorm().apply(v, x, mutable=['batch_stats'])
  grouped, _ = BatchNorm(group_size=4).apply(v, x, mutable=['batch_stats'])
  assert np.abs(np.asarray(whole) - np.asarray(grouped)).max() > 1e-2


@pytest.mark.parametrize('group_size', [0, 8, 16])
def test_group_size_zero_or_at_least_the_batch_means_whole_batch(group_size):
  x = activations()
  v = variables_for()
  reference, _ = BatchNorm().apply(v, x, mutable=['batch_stats'])
  y, _ = BatchNorm(group_size=group_size).apply(v, x, mutable=['batch_stats'])
  np.testing.assert_allclose(np.asarray(y), np.asarray(reference), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('group_size', [3, 5])
def test_group_size_that_does_not_divide_the_batch_raises(group_size):
  with pytest.raises(ValueError, match=f'bn_group_size={group_size}.*batch of 8'):
    BatchNorm(group_size=group_size).apply(variables_for(), activations(), mutable=['batch_stats'])


def test_bfloat16_input_gives_float32_statistics():
  # Around 64 bfloat16 values are 0.5 apart: sums of 1024 of them accumulated in bfloat16 would
  # be off by far more than the tolerances below.
  rng = np.random.default_rng(4)
  x = jnp.asarray(64.0 + rng.normal(size=(16, 8, 8, 3)), jnp.bfloat16)
  v = variables_for()
  # A running mean that has tracked the data (as after the first steps): the shift the
  # one-pass variance subtracts before squaring.
  v['batch_stats']['mean'] = np.full(3, 63.7, np.float32)
  y, state = BatchNorm(momentum=0.0, dtype=jnp.bfloat16).apply(v, x, mutable=['batch_stats'])
  exact = np.asarray(x, np.float64)
  assert state['batch_stats']['mean'].dtype == jnp.float32
  np.testing.assert_allclose(state['batch_stats']['mean'], exact.mean(axis=(0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(state['batch_stats']['var'], exact.var(axis=(0, 1, 2), ddof=1),
                             rtol=1e-4)
  assert y.dtype == jnp.bfloat16
  expected = normalise(exact, exact.mean(axis=(0, 1, 2)), exact.var(axis=(0, 1, 2)),
                       v['params']['scale'], v['params']['bias'])
  np.testing.assert_allclose(np.asarray(y, np.float64), expected, rtol=2e-2, atol=2e-2)


def test_output_dtype_defaults_to_float32_for_bfloat16_input():
  x = jnp.asarray(activations(), jnp.bfloat16)
  y, _ = BatchNorm().apply(variables_for(), x, mutable=['batch_stats'])
  assert y.dtype == jnp.float32


def test_one_pass_variance_from_a_cold_running_mean_stays_close():
  # Mean 64 against a spread of 1 with the running mean still at 0: E[d^2] - E[d]^2 loses about
  # 64^2 * 2^-24 of absolute precision, well under a percent of the variance.
  rng = np.random.default_rng(5)
  x = (64.0 + rng.normal(size=(16, 8, 8, 3))).astype(np.float32)
  v = variables_for()
  v['batch_stats']['mean'] = np.zeros(3, np.float32)
  _, state = BatchNorm(momentum=0.0).apply(v, x, mutable=['batch_stats'])
  exact = np.asarray(x, np.float64)
  np.testing.assert_allclose(state['batch_stats']['var'], exact.var(axis=(0, 1, 2), ddof=1),
                             rtol=1e-3)


def test_shifted_statistics_equal_the_two_pass_ones_far_from_zero():
  # Large offsets, the running mean near them: as accurate as the two-pass variance.
  rng = np.random.default_rng(6)
  x = (1000.0 + rng.normal(size=(32, 4, 4, 3)) * [0.1, 1.0, 10.0]).astype(np.float32)
  v = variables_for()
  v['batch_stats']['mean'] = np.full(3, 1000.5, np.float32)
  _, state = BatchNorm(momentum=0.0).apply(v, x, mutable=['batch_stats'])
  exact = np.asarray(x, np.float64)
  np.testing.assert_allclose(state['batch_stats']['var'], exact.var(axis=(0, 1, 2), ddof=1),
                             rtol=1e-4)
