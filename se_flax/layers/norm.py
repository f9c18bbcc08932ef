"""Batch normalisation with global or per-group statistics.

Under `jax.jit` over a batch sharded on the `data` axis, the batch mean is a
mean over the global batch, i.e. synchronised BN. The paper trained with
per-GPU statistics (Caffe, 8 GPUs, section 6.1); `group_size` reproduces that by
normalising each group of `group_size` consecutive examples with its own
statistics.

One cross-device reduction per layer for whole-batch statistics: the mean
and the mean of squares are reduced together (concatenated on the feature
axis), so synchronised BN costs one all-reduce in the forward pass, not two.
The data are shifted by the running mean before squaring, which keeps
E[d^2] - E[d]^2 accurate where the unshifted E[x^2] - mean^2 would cancel (a
channel whose mean is large against its spread); until the running mean has
tracked the data (the first steps) the variance is accurate to about
2^-24 (mean / std)^2 relative. Groups keep the two-pass variance: a group
within one device reduces locally, and one spanning whole devices (the only
other kind config checks allow) needs no gather, only two all-reduces.

With `spatial_mean=True` the layer returns a `Normalised`: its output, each
example's mean of it over the spatial axes (the squeeze of an SE block that
follows, paper Eq. 2), and the output's product with the block's gates. In
training the mean comes from the statistics' own pass over the input,
reduced over the spatial axes first and the batch second, where a squeeze of
the output would read the whole output once more; and the product has a
backward pass of its own (`_normalise_and_scale`), which takes the gates'
gradient and the normalisation's from one pass over the output's gradient
(docs/design.md, "Numerics"). In evaluation the caller may give the mean
(`input_mean`).

Variables match `flax.linen.BatchNorm` (`scale`, `bias`; `mean`,
`var` in `batch_stats`) so checkpoints and converters see one layout.
"""

import functools
from typing import Any, Callable, Optional

from flax import struct
import flax.linen as nn
import jax
import jax.numpy as jnp


@struct.dataclass
class Normalised:
  """BatchNorm's output with what an SE block after it takes (`spatial_mean=True`).

  value: the output, (N, H, W, C). spatial_mean: its per-example mean over H
  and W, (N, 1, 1, C) in float32. inputs: where the product with gates has
  the joint backward pass (training with whole-batch statistics), the
  arguments of `_normalise_and_scale` before the gates; else None.
  A pytree of arrays, as a module's output must be for Flax to capture it.
  """
  value: Any
  spatial_mean: Any
  inputs: Optional[tuple] = None
  dtype: Any = struct.field(pytree_node=False, default=None)

  def scaled(self, gates):
    """value * gates, gates (N, 1, 1, C), in value's dtype."""
    if self.inputs is None:
      return self.value * gates.astype(self.value.dtype)
    return _normalise_and_scale(*self.inputs, gates, self.dtype)


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last; statistics always in float32."""
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  group_size: int = 0  # 0: statistics over the whole batch
  dtype: Any = jnp.float32  # output dtype
  scale_init: Any = nn.initializers.ones

  @nn.compact
  def __call__(self, x, *, spatial_mean: bool = False, input_mean: Optional[Callable] = None):
    """The normalised `x`; with `spatial_mean`, a `Normalised`.

    `input_mean`: where the caller can compute the per-example spatial mean
    of `x` without reading `x` (the mean of a 1x1 convolution's output is the
    convolution of its input's mean), a function that returns it, (N, 1, 1,
    C). Evaluation then takes the output's mean from it; training has it from
    the statistics.
    """
    features = x.shape[-1]
    scale = self.param('scale', self.scale_init, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((features,), jnp.float32))

    x32 = x.astype(jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
      affine = lambda v: (v - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
      z = affine(input_mean().astype(jnp.float32)) if spatial_mean and input_mean else None
      return _with_mean(affine(x32), z, self.dtype, spatial_mean)

    batch = x.shape[0]
    groups = 1
    if self.group_size and self.group_size < batch:
      if batch % self.group_size:
        raise ValueError(
            f'config.bn_group_size={self.group_size} does not divide the batch of {batch}; '
            'use a divisor of the global batch size, or 0 for whole-batch statistics')
      groups = batch // self.group_size
    xg = x32.reshape((groups, batch // groups) + x.shape[1:])
    axes = tuple(range(1, xg.ndim - 1))
    example_means = None
    if groups == 1:
      mean, var, example_means = _one_pass_moments(xg, axes, jax.lax.stop_gradient(ra_mean.value),
                                                   per_example=spatial_mean)
    else:
      # Groups within a device reduce locally, where a second pass costs no exchange.
      mean = jnp.mean(xg, axis=axes, keepdims=True)
      var = jnp.mean(jnp.square(xg - mean), axis=axes, keepdims=True)

    if not self.is_initializing():
      # The running statistics average the groups, as per-device BN with averaged stats does;
      # the variance is stored unbiased, as Caffe and PyTorch do, so imported statistics mean the same.
      n = xg.size // (groups * features)
      unbiased = var * (n / max(n - 1, 1))
      m = self.momentum
      # Averaged over groups together: one more reduction only when groups span devices.
      stats = jnp.mean(jnp.concatenate([mean, unbiased], axis=-1), axis=range(xg.ndim - 1))
      batch_mean, batch_var = jnp.split(stats, 2)
      ra_mean.value = m * ra_mean.value + (1 - m) * batch_mean
      ra_var.value = m * ra_var.value + (1 - m) * batch_var

    rsig = jax.lax.rsqrt(var + self.epsilon)
    y = _normalise(xg, mean, rsig, scale, bias)
    if example_means is None:
      return _with_mean(y.reshape(x.shape), None, self.dtype, spatial_mean)
    # An affine map per channel: the mean of the output is the map of the input's mean.
    z = _normalise(example_means, mean, rsig, scale, bias).reshape(x.shape[0], 1, 1, features)
    # Per example: the backward pass then sums each channel gradient's two paths (through the
    # output and through its mean z) before it sums over the batch, one all-reduce for both.
    per_example = lambda v: jnp.broadcast_to(v.reshape(features), z.shape)
    inputs = (x, *map(per_example, (mean, rsig, scale, bias)))
    return Normalised(y.reshape(x.shape).astype(self.dtype), z, inputs, self.dtype)


def _normalise(v, mean, rsig, scale, bias):
  return (v - mean) * rsig * scale + bias


def _with_mean(y, z, dtype, spatial_mean):
  """y in `dtype`; with `spatial_mean`, a `Normalised` whose mean is z or, where neither
  the statistics nor the caller give z (grouped statistics; evaluation after a
  convolution other than 1x1), the output's own mean, taken as the SE block's squeeze
  takes it.
  """
  out = y.astype(dtype)
  if not spatial_mean:
    return out
  if z is None:
    z = jnp.mean(out, axis=(1, 2), keepdims=True, dtype=jnp.float32)
  return Normalised(out, z.reshape((y.shape[0], 1, 1, y.shape[-1])))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _normalise_and_scale(x, mean, rsig, scale, bias, gates, dtype):
  """BatchNorm(x) * gates: x (N, H, W, C); mean, rsig, scale, bias and gates (N, 1, 1, C).

  The forward pass computes what BatchNorm, then the SE block's scale,
  compute (the same operations in the same dtypes); the backward pass is
  `_normalise_and_scale_bwd`.
  """
  y = _normalise(x.astype(jnp.float32), mean, rsig, scale, bias).astype(dtype)
  return y * gates.astype(dtype)


def _normalise_and_scale_fwd(x, mean, rsig, scale, bias, gates, dtype):
  return (_normalise_and_scale(x, mean, rsig, scale, bias, gates,
                               dtype), (x, mean, rsig, scale, bias, gates))


def _normalise_and_scale_bwd(dtype, residuals, g):
  """The gradients of out = y * s, y = (x - mean) * rsig * scale + bias, from one reduction.

  Every gradient but x's is a sum of g times something constant over the
  spatial axes of an example, or times (x - mean): so the per-example sums
  a = sum_hw g and b = sum_hw g (x - mean), one pass over g and x, give them
  all: d s = rsig scale b + bias a (the SE gates'), and the channel
  gradients per example, s a and s b times per-channel factors. Computed in
  float32 from x, not from the rounded output.
  """
  del dtype
  x, mean, rsig, scale, bias, gates = residuals
  g = g.astype(jnp.float32)
  s = gates.astype(jnp.float32)
  a = jnp.sum(g, axis=(1, 2), keepdims=True)
  b = jnp.sum(g * (x.astype(jnp.float32) - mean), axis=(1, 2), keepdims=True)
  dx = g * (s * scale * rsig)
  return (dx.astype(x.dtype), -scale * rsig * s * a, scale * s * b, rsig * s * b, s * a,
          (rsig * scale * b + bias * a).astype(gates.dtype))


_normalise_and_scale.defvjp(_normalise_and_scale_fwd, _normalise_and_scale_bwd)


def _one_pass_moments(x, axes, shift, per_example=False):
  """Mean and variance over `axes` from one reduction of [x - shift, (x - shift)^2], and with
  `per_example` the means over the axes but the first (the batch), else None.

  Under `jit` over a sharded batch this is one all-reduce; shifting by the
  running mean keeps E[d^2] - E[d]^2 from cancelling once it tracks the data.
  With `per_example` the spatial axes are reduced first, then the batch: the
  same single pass over x gives both.
  """
  d = x - shift
  both = jnp.concatenate([d, jnp.square(d)], axis=-1)
  example_means = None
  if per_example:
    spatial = jnp.mean(both, axis=axes[1:], keepdims=True)
    moments = jnp.mean(spatial, axis=axes[0], keepdims=True)
    example_means = shift + jnp.split(spatial, 2, axis=-1)[0]
  else:
    moments = jnp.mean(both, axis=axes, keepdims=True)
  d_mean, d_square = jnp.split(moments, 2, axis=-1)
  return shift + d_mean, jnp.maximum(d_square - jnp.square(d_mean), 0.0), example_means
