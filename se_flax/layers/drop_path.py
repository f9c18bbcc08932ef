"""Stochastic depth (Huang et al. 2016): residual branches dropped per example while training.

A unit computes `x + F(x)`; in training, each example keeps `F(x)` with
probability 1 - p, scaled by 1 / (1 - p) so its expectation is unchanged, and
otherwise passes `x` alone. At evaluation the branch is always kept, unscaled.
The rate grows linearly with depth, from 0 at the first unit to the network's
`drop_path_rate` at the last (timm's `linspace(0, rate, N)`). The masks come
from the 'dropout' rng collection, which the train step keys by step
(docs/design.md, "Determinism").
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def linear_rates(rate: float, num_units: int) -> tuple[float, ...]:
  """p_i = rate * i / (N - 1) for the N residual units in order: 0 first, `rate` last."""
  return tuple(float(p) for p in np.linspace(0.0, rate, num_units))


class DropPath(nn.Module):
  """Zeroes whole examples of a residual branch with probability `rate`, scales the rest up.

  Attributes:
    rate: the probability of dropping the branch, in [0, 1).
    deterministic: True passes the branch through (evaluation); may be given
      at call time instead.
  """
  rate: float
  deterministic: Optional[bool] = None

  @nn.compact
  def __call__(self, x, deterministic: Optional[bool] = None):
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    if not 0.0 <= self.rate < 1.0:
      raise ValueError(f'drop path rate {self.rate} must be in [0, 1)')
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    # One draw per example, broadcast over its map and channels.
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    kept = jax.random.bernoulli(self.make_rng('dropout'), keep, shape)
    return jnp.where(kept, x / keep, jnp.zeros_like(x))
