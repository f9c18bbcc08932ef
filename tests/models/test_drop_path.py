"""Stochastic depth: per-example masks, identity at evaluation, rates linear over depth."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from se_flax import models
from se_flax.errors import ConfigError
from se_flax.layers.drop_path import DropPath
from se_flax.layers.drop_path import linear_rates
from se_flax.models import unit
from tests.layers.random_variables import random_variables

BRANCH = 3.0  # the constant the test unit's residual branch puts out


class ConstantBranchUnit(nn.Module):
  """x + F(x) with F(x) = BRANCH everywhere, so the output shows each example's draw."""
  rate: float

  @nn.compact
  def __call__(self, x, train):
    return unit.residual_sum(self, x, lambda h, _: jnp.full_like(h, BRANCH), lambda h: h, None,
                             None, self.rate, train)


def run_unit(rate, x, seed, train=True):
  return np.asarray(
      ConstantBranchUnit(rate).apply({}, jnp.asarray(x), train,
                                     rngs={'dropout': jax.random.PRNGKey(seed)}))


def test_each_example_keeps_or_drops_its_whole_branch():
  rate = 0.4
  x = np.random.default_rng(0).normal(size=(64, 3, 4, 2)).astype(np.float32)
  out = run_unit(rate, x, seed=1)
  kept = (out - x)[:, 0, 0, 0] > BRANCH / 2
  expected = x + np.where(kept, BRANCH / (1 - rate), 0.0)[:, None, None, None].astype(np.float32)
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
  assert 0 < kept.sum() < len(kept)  # both outcomes occur in 64 draws
  # Same key, same masks; another key, other masks.
  np.testing.assert_array_equal(run_unit(rate, x, seed=1), out)
  assert not np.array_equal(run_unit(rate, x, seed=2), out)


def test_scaled_branch_is_unbiased():
  rate = 0.3
  x = np.zeros((16, 1, 1, 1), np.float32)
  keys = jax.random.split(jax.random.PRNGKey(0), 250)
  apply = jax.vmap(lambda k: ConstantBranchUnit(rate).apply({}, x, True, rngs={'dropout': k}))
  branch = np.asarray(apply(keys)).ravel()
  scaled = branch > 0
  np.testing.assert_array_equal(branch[~scaled], 0.0)
  np.testing.assert_allclose(branch[scaled], BRANCH / (1 - rate), rtol=1e-6)
  # 4000 draws: the kept share and the mean sit within 5 standard errors of 1 - p and F(x).
  assert scaled.mean() == pytest.approx(1 - rate, abs=0.04)
  assert branch.mean() == pytest.approx(BRANCH, abs=0.15)


def test_evaluation_is_the_identity():
  x = np.random.default_rng(1).normal(size=(8, 2, 2, 3)).astype(np.float32)
  np.testing.assert_array_equal(run_unit(0.5, x, seed=0, train=False), x + BRANCH)
  y = DropPath(0.5).apply({}, jnp.asarray(x), deterministic=True)
  np.testing.assert_array_equal(np.asarray(y), x)


def test_a_network_at_eval_ignores_the_rate_and_drops_in_training():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 8, 8, 3)), jnp.float32)
  # ResNet-8: one unit per stage, rates 0, 0.25, 0.5.
  plain = models.create_model('se_cifar_resnet20', 10, depth=8)
  dropped = models.create_model('se_cifar_resnet20', 10, depth=8, drop_path_rate=0.5)
  # The rate adds no variable.
  shapes = lambda m: jax.eval_shape(lambda v: m.init(jax.random.PRNGKey(0), v), x)
  assert shapes(dropped) == shapes(plain)
  variables = random_variables(plain, x)
  train = lambda m, v: m.apply(v, x, train=True, mutable=['batch_stats'], rngs=
                               {'dropout': jax.random.PRNGKey(1)})[0]
  outs = jax.jit(lambda v: (dropped.apply(v, x), plain.apply(v, x), train(dropped, v),
                            train(plain, v)))(variables)
  y_dropped, y_plain, t_dropped, t_plain = (np.asarray(y) for y in outs)
  np.testing.assert_array_equal(y_dropped, y_plain)
  # In training the rate reaches the units: 4 examples and two rates of 0.25 and 0.5.
  assert not np.allclose(t_dropped, t_plain)


def wired_rates(model, input_shape):
  """The rate of every DropPath the network builds, in call order (traced, not compiled)."""
  rates = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, DropPath) and context.method_name == '__call__':
      rates.append((context.module.scope.path[-2], context.module.rate))
    return next_fun(*args, **kwargs)

  x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
  variables = jax.eval_shape(lambda v: model.init(jax.random.PRNGKey(0), v), x)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, xx: model.apply(v, xx), variables, x)
  return rates


@pytest.mark.parametrize('name,overrides,input_shape,units', [
    ('cifar_resnet20', {}, (1, 8, 8, 3), [f'layer{s}_{j}' for s in (1, 2, 3) for j in range(3)]),
    ('se_resnet18', {}, (1, 32, 32, 3), [f'layer{s}_{j}' for s in (1, 2, 3, 4) for j in range(2)]),
    ('shufflenet_v1_g3', dict(units=(2, 3, 2), widths=(24, 48, 96), stem_width=12),
     (1, 32, 32, 3), ['layer1_1', 'layer2_1', 'layer2_2', 'layer3_1']),
    ('inception_resnet_v2', dict(units=(2, 1, 2), width=0.125),
     (1, 75, 75, 3), ['layer1_0', 'layer1_1', 'layer2_0', 'layer3_0', 'layer3_1']),
])
def test_rates_grow_linearly_over_the_residual_units(name, overrides, input_shape, units):
  rate = 0.2
  model = models.create_model(name, 10, drop_path_rate=rate, **overrides)
  expected = np.linspace(0.0, rate, len(units))
  assert linear_rates(rate, len(units)) == pytest.approx(expected, abs=0)
  # The first unit's rate is 0, so it gets no DropPath at all.
  got = wired_rates(model, input_shape)
  assert [u for u, _ in got] == units[1:]
  np.testing.assert_array_equal([p for _, p in got], expected[1:])


def model_config(name, rate):
  config = default.get_base_config()
  config.model.name = name
  config.model.drop_path_rate = rate
  return config


def test_from_config_sets_the_rate_on_residual_networks():
  assert models.from_config(model_config('se_resnet50', 0.1), 10).drop_path_rate == 0.1
  assert models.from_config(model_config('inception_resnet_v2', 0.2), 10).drop_path_rate == 0.2


@pytest.mark.parametrize('name', ['vgg16_bn', 'se_bn_inception', 'mobilenet_v1'])
def test_networks_without_residual_units_refuse_a_rate(name):
  assert models.from_config(model_config(name, 0.0), 10) is not None
  with pytest.raises(ConfigError, match=r"config\.model\.drop_path_rate=0\.1 .*'se_resnet50'"):
    models.from_config(model_config(name, 0.1), 10)


@pytest.mark.parametrize('rate', [-0.1, 1.0])
def test_rate_outside_zero_one_is_refused(rate):
  allowed = r'must be in \[0, 1\)'
  with pytest.raises(ConfigError, match=rf'config\.model\.drop_path_rate={rate} {allowed}'):
    models.from_config(model_config('se_resnet50', rate), 10)
