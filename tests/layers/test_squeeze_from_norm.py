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
import jax.test_util
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
  out, _ = layer.apply(variables, x, spatial_mean=True, mutable=['batch_stats'])
  y, z = out.value, out.spatial_mean
  plain, _ = layer.apply(variables, x, mutable=['batch_stats'])
  # The output is the layer's own; whole-batch statistics summed in another order differ in
  # the last bits.
  np.testing.assert_allclose(y, plain, rtol=1e-6, atol=1e-6)
  assert z.shape == (4, 1, 1, 6) and z.dtype == jnp.float32
  np.testing.assert_allclose(z, np.mean(np.asarray(y, np.float64), axis=(1, 2), keepdims=True),
                             rtol=1e-5, atol=1e-5)
  gates = jax.random.uniform(jax.random.PRNGKey(4), z.shape)
  np.testing.assert_allclose(out.scaled(gates),
                             np.asarray(y) * np.asarray(gates), rtol=1e-6, atol=1e-6)


def _norm_then_scale(x, scale, bias, gates, dtype, fused):
  """BatchNorm (whole-batch statistics) of x, times per-example gates: through the layer's
  `Normalised.scaled`, or as plain jax operations that autodiff differentiates."""
  layer = BatchNorm(dtype=dtype)
  variables = {
      'params': {
          'scale': scale,
          'bias': bias
      },
      'batch_stats': {
          'mean': jnp.zeros(x.shape[-1]),
          'var': jnp.ones(x.shape[-1])
      }
  }
  out, _ = layer.apply(variables, x, spatial_mean=True, mutable=['batch_stats'])
  if fused:
    return out.scaled(gates)
  return out.value * gates.astype(dtype)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_the_joint_backward_of_norm_and_scale_equals_autodiff(dtype):
  """`_normalise_and_scale`'s hand-written backward against jax's autodiff of the same forward
  pass, every input's gradient, under a cotangent that is not constant in space."""
  keys = jax.random.split(jax.random.PRNGKey(5), 5)
  x = (jax.random.normal(keys[0], (3, 5, 4, 8)) * 2.0 + 0.7).astype(dtype)
  scale = jax.random.normal(keys[1], (8,))
  bias = jax.random.normal(keys[2], (8,))
  gates = jax.random.uniform(keys[3], (3, 1, 1, 8), minval=0.1, maxval=0.9)
  cotangent = jax.random.normal(keys[4], x.shape).astype(dtype)

  def vjp(fused):
    f = lambda *a: _norm_then_scale(*a, dtype, fused)
    out, pull = jax.vjp(f, x, scale, bias, gates)
    return out, pull(cotangent)

  out, grads = vjp(True)
  ref_out, ref_grads = vjp(False)
  np.testing.assert_array_equal(np.float32(out), np.float32(ref_out))  # the same forward pass
  # bf16: autodiff's reference multiplies and sums in bf16; the joint backward in float32.
  tol = 2e-5 if dtype == jnp.float32 else 3e-2
  for name, got, want in zip(('x', 'scale', 'bias', 'gates'), grads, ref_grads):
    want = np.float32(want)
    np.testing.assert_allclose(np.float32(got), want, rtol=tol, atol=tol * np.abs(want).max(),
                               err_msg=name)


def test_the_joint_backward_passes_a_numerical_gradient_check():
  """Against finite differences of the forward pass (jax.test_util.check_grads), in float32."""
  keys = jax.random.split(jax.random.PRNGKey(6), 4)
  x = jax.random.normal(keys[0], (2, 3, 3, 4)) + 0.5
  scale = jax.random.normal(keys[1], (4,))
  bias = jax.random.normal(keys[2], (4,))
  gates = jax.random.uniform(keys[3], (2, 1, 1, 4), minval=0.2, maxval=0.8)
  f = lambda *a: _norm_then_scale(*a, jnp.float32, True)
  jax.test_util.check_grads(f, (x, scale, bias, gates), order=1, modes=['rev'], eps=1e-2, atol=2e-2,
                            rtol=2e-2)


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
    patch.setattr(unit.Unit, 'last_norm', lambda self, h, *_, **kw: self.norm(**kw)(h))
    (ref_value, ref_y), ref_grads = jax.value_and_grad(loss, has_aux=True)(variables['params'])
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(np.float32(y), np.float32(ref_y), rtol=tol, atol=tol)
  np.testing.assert_allclose(value, ref_value, rtol=tol)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_in_evaluation_the_squeeze_of_a_1x1_convs_input_matches_the_squeeze_of_its_output(
    dtype, monkeypatch):
  """A bottleneck's SE block evaluates on the mean of conv3's input, convolved (layers/norm.py's
  `input_mean`), and matches the same unit squeezing bn3's output."""
  x = jax.random.normal(jax.random.PRNGKey(7), (3, 5, 5, 16)).astype(dtype)
  model = _bottleneck(SESpec(reduction=4))
  variables = model.init(jax.random.PRNGKey(8), x)
  variables = jax.tree.map(lambda v: v + 0.3, variables)  # statistics not 0 / 1, scale not 0
  in_eval = model.clone(norm=functools.partial(BatchNorm, use_running_average=True))
  evaluate = lambda: in_eval.apply(variables, x)
  # Reductions of whole (3, 5, 5, 16) maps: the output's, where the block squeezes it. A new
  # function each time: a traced one is cached with the code it saw.
  output_reductions = lambda: _reductions_under(
      jax.make_jaxpr(lambda: in_eval.apply(variables, x))().jaxpr, '', x.shape)
  y, reductions = evaluate(), output_reductions()
  with monkeypatch.context() as patch:
    patch.setattr(unit.Unit, 'last_norm', lambda self, h, *_, **kw: self.norm(**kw)(h))
    ref, ref_reductions = evaluate(), output_reductions()
  assert (reductions, ref_reductions) == ([], [x.shape])
  tol = 1e-5 if dtype == jnp.float32 else 3e-2
  np.testing.assert_allclose(np.float32(y), np.float32(ref), rtol=tol, atol=tol)


def _reductions_under(jaxpr, scope, shape=None):
  """The input shapes of the reductions under name scope `scope` (of `shape` only, if given)."""
  found = []
  for eqn in jaxpr.eqns:
    for sub in jax.core.jaxprs_in_params(eqn.params):
      found += _reductions_under(sub, scope, shape)
    if eqn.primitive.name.startswith('reduce') and scope in str(eqn.source_info.name_stack):
      if shape is None or eqn.invars[0].aval.shape == shape:
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
    patch.setattr(unit.Unit, 'last_norm', lambda self, h, *_, **kw: self.norm(**kw)(h))
    assert squeezes() == [(2, 6, 6, 16)]
