"""Squeeze operators: U (N, H, W, C) -> z (N, h, w, k*C).

Section 3.1 of the paper: the squeeze embeds global spatial information in a
channel descriptor. `h, w` are 1 for the global operators; `gather` keeps a
coarse grid (Gather-Excite, Hu et al. 2018) and `none` keeps every position
(NoSqueeze, paper Table 16), so the excitation then acts as 1x1 convolutions.

A squeeze is a function `fn(x, spec, module) -> z`, registered with its width
factor k (how many descriptors per channel it emits). `module` is the calling
SE block, Linen or NNX, through which an operator makes its parameters with
`module.param(name, init_fn)` (`gem`'s exponent): both APIs' blocks answer it.
Reductions run in float32 whatever the compute dtype.
"""

from typing import Callable, NamedTuple

import jax.numpy as jnp


class SqueezeOp(NamedTuple):
  fn: Callable
  width_factor: int


SQUEEZES: dict[str, SqueezeOp] = {}
# Cell sides of squeeze='gather' (Table 16); 0 pools the whole map.
GATHER_EXTENTS = (0, 2, 4, 8)


def register(name, width_factor=1):

  def wrap(fn):
    SQUEEZES[name] = SqueezeOp(fn, width_factor)
    return fn

  return wrap


def _mean(x):
  return jnp.mean(x, axis=(1, 2), keepdims=True, dtype=jnp.float32)


@register('avg')
def avg(x, spec, module):
  """Global average pooling: the paper's squeeze (Eq. 2, Table 11)."""
  del spec, module
  return _mean(x)


@register('max')
def max_(x, spec, module):
  """Global max pooling (Table 11)."""
  del spec, module
  return jnp.max(x, axis=(1, 2), keepdims=True).astype(jnp.float32)


@register('avgmax')
def avgmax(x, spec, module):
  """Mean of global average and global max pooling."""
  return 0.5 * (avg(x, spec, module) + max_(x, spec, module))


@register('gem')
def gem(x, spec, module):
  """Generalised mean (Radenovic et al. 2018) with a learned exponent p, initialised to 3."""
  del spec
  p = module.param('gem_p', lambda _: jnp.array(3.0, jnp.float32))
  eps = 1e-6
  # GeM is defined on non-negative inputs; clamping keeps x**p real for negative pre-activations.
  xp = jnp.power(jnp.maximum(x.astype(jnp.float32), eps), p)
  return jnp.power(jnp.mean(xp, axis=(1, 2), keepdims=True), 1.0 / p)


@register('meanstd', width_factor=2)
def meanstd(x, spec, module):
  """Channel mean and standard deviation side by side (style-pooling-like descriptor)."""
  del spec, module
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
  std = jnp.sqrt(jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True) + 1e-5)
  return jnp.concatenate([mean, std], axis=-1)


@register('gather')
def gather(x, spec, module):
  """Parameter-free gather: average pooling over `spec.gather_extent` x extent cells (0: global).

  Where the extent does not divide the map (ImageNet's 7x7 last stage), the
  cells at the bottom and right edges are partial and average only the
  positions they hold, as ceil-mode pooling without padded zeros does.
  """
  del module
  e = spec.gather_extent
  n, h, w, c = x.shape
  if e == 0:
    return _mean(x)
  if e > min(h, w):
    raise ValueError(
        f'config.model.se.gather_extent={e} does not fit a {h}x{w} feature map: the extent must '
        f'not exceed its sides; allowed here: {[k for k in GATHER_EXTENTS if 0 < k <= min(h, w)]} or 0 (global)'
    )
  hc, wc = -(-h // e), -(-w // e)
  pad = ((0, hc * e - h), (0, wc * e - w))
  sums = jnp.pad(x.astype(jnp.float32), ((0, 0),) + pad + ((0, 0),))
  sums = sums.reshape(n, hc, e, wc, e, c).sum(axis=(2, 4))
  counts = jnp.pad(jnp.ones((h, w), jnp.float32), pad).reshape(hc, e, wc, e).sum(axis=(1, 3))
  return sums / counts[None, :, :, None]


@register('none')
def none(x, spec, module):
  """NoSqueeze (Table 16): every position keeps its own descriptor."""
  del spec, module
  return x
