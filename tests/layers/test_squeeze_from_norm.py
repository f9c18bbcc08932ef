"""The average squeeze taken from BatchNorm's statistics equals the squeeze of BN's output.

`BatchNorm(spatial_mean=True)` reduces its input over the spatial axes first
and the batch second, and maps the per-example means through the same affine
normalisation; the SE block after it then squeezes nothing again
(`Unit.last_norm`). Compared here with numpy's mean of the layer's output, and
a whole SE unit with the same unit squeezing its own output.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.layers.norm import BatchNorm
from se_flax.layers.se import SESpec
from se_flax.models import blocks
from se_flax.models import unit


@pytest.mark.parametrize('train, group_size', [(True, 0), (True, 2), (False, 0)])
def test_spatial_mean_is_numpys_mean_of_the_output(train, group_size):
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 3, 6)) * 3.0 + 1.5
  layer = BatchNorm(use_running_average=not train, group_size=group_size)
  variables = layer.init(jax.random.PRNGKey(1), x)
  variables = jax.tree.map(lambda v: v + 0.25, variables)  # scale, bias, statistics not 1 / 0
  (y, z), _ = layer.apply(variables, x, spatial_mean=True, mutable=['batch_stats'])
  plain, _ = layer.apply(variables, x, mutable=['batch_stats'])
  # The output is the layer's own; whole-batch statistics summed in another order differ in
  # the last bits.
  np.testing.assert_allclose(y, plain, rtol=1e-6, atol=1e-6)
  assert z.shape == (4, 1, 1, 6) and z.dtype == jnp.float32
  np.testing.assert_allclose(z, np.mean(np.asarray(y, np.float64), axis=(1, 2), keepdims=True),
                             rtol=1e-5, atol=1e-5)


def _bottleneck(se):
  norm = functools.partial(BatchNorm, use_running_average=False)
  conv = functools.partial(nn.Conv, use_bias=False)
  return blocks.Bottleneck(conv=conv, norm=norm, act=jax.nn.relu, se=se, planes=4, strides=1,
                           width=8, first_width=8, zero_init=False)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_a_unit_with_the_squeeze_from_its_norm_matches_one_that_squeezes_its_output(
    dtype, monkeypatch):
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 6, 6, 16)).astype(dtype)
  model = _bottleneck(SESpec(reduction=4))
  variables = model.init(jax.random.PRNGKey(3), x)

  def loss(params):
    y, _ = model.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
    return jnp.sum(jnp.square(y.astype(jnp.float32))), y

  (value, y), grads = jax.value_and_grad(loss, has_aux=True)(variables['params'])
  # The same unit, its SE block squeezing BN's output itself.
  with monkeypatch.context() as patch:
    patch.setattr(unit.Unit, 'last_norm', lambda self, h, **kw: self.norm(**kw)(h))
    (ref_value, ref_y), ref_grads = jax.value_and_grad(loss, has_aux=True)(variables['params'])
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(np.float32(y), np.float32(ref_y), rtol=tol, atol=tol)
  np.testing.assert_allclose(value, ref_value, rtol=tol)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=10 * tol, atol=10 * tol)


def _reductions_under(jaxpr, scope):
  found = []
  for eqn in jaxpr.eqns:
    for sub in jax.core.jaxprs_in_params(eqn.params):
      found += _reductions_under(sub, scope)
    if eqn.primitive.name.startswith('reduce') and scope in str(eqn.source_info.name_stack):
      found.append(eqn.invars[0].aval.shape)
  return found


def test_the_se_block_after_a_norm_reduces_nothing_itself(monkeypatch):
  x = jnp.ones((2, 6, 6, 16))
  model = _bottleneck(SESpec(reduction=4))
  variables = model.init(jax.random.PRNGKey(0), x)

  def squeezes():
    # A new function each time: a traced one is cached with the code it saw.
    jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, mutable=['batch_stats']))(variables)
    return _reductions_under(jaxpr.jaxpr, 'squeeze')

  assert squeezes() == []
  with monkeypatch.context() as patch:
    patch.setattr(unit.Unit, 'last_norm', lambda self, h, **kw: self.norm(**kw)(h))
    assert squeezes() == [(2, 6, 6, 16)]
