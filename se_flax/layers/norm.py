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

With `spatial_mean=True` the layer also returns each example's mean of its
output over the spatial axes: the squeeze of an SE block that follows it
(paper Eq. 2). In training it comes from the statistics' own pass over the
input, reduced over the spatial axes first and the batch second, where a
squeeze of the output would read the whole output once more.

Variables match `flax.linen.BatchNorm` (`scale`, `bias`; `mean`,
`var` in `batch_stats`) so checkpoints and converters see one layout.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last; statistics always in float32."""
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  group_size: int = 0  # 0: statistics over the whole batch
  dtype: Any = jnp.float32  # output dtype
  scale_init: Any = nn.initializers.ones

  @nn.compact
  def __call__(self, x, *, spatial_mean: bool = False):
    """The normalised `x`; with `spatial_mean`, (it, its per-example spatial mean (N, 1, 1, C)
    in float32)."""
    features = x.shape[-1]
    scale = self.param('scale', self.scale_init, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((features,), jnp.float32))

    x32 = x.astype(jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
      y = (x32 - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
      return _with_mean(y, None, self.dtype, spatial_mean)

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

    normalise = lambda v: (v - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    y = normalise(xg)
    # An affine map per channel: the mean of the output is the map of the input's mean.
    z = None if example_means is None else normalise(example_means)
    return _with_mean(y.reshape(x.shape), z, self.dtype, spatial_mean)


def _with_mean(y, z, dtype, spatial_mean):
  """y in `dtype`; with `spatial_mean`, (it, the float32 spatial means z).

  Where no statistics pass gives z (running averages in evaluation, grouped
  statistics), it is the output's own mean, taken as the SE block's squeeze takes it.
  """
  out = y.astype(dtype)
  if not spatial_mean:
    return out
  if z is None:
    z = jnp.mean(out, axis=(1, 2), keepdims=True, dtype=jnp.float32)
  return out, z.reshape((y.shape[0], 1, 1, y.shape[-1]))


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
