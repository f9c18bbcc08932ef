"""What every unit of a backbone shares: its fields, and the places its SE block can take.

A unit is what a backbone stacks in its stages (`Backbone.stages`). Units
without a shortcut (VGG's conv, MobileNet's depthwise-separable block, an
Inception module) are the transformation SE wraps (paper section 3.3, Fig. 2):
the block follows the unit, or its 3x3 conv where the spec's position says
so. Residual units (blocks.py, ShuffleNet's and Inception-ResNet-v2's units)
combine their branch F and their shortcut through `residual_sum`, which puts
the block where the spec says (paper Fig. 5 and Table 14):

  standard  x + SE(F(x))         the SE-ResNet module (Fig. 3)
  pre       x + F(SE(x))         SE before the residual unit
  post      SE(act(x + F(x)))    SE after the summation
  identity  SE(x) + F(x)         SE on the identity branch

A unit that concatenates its shortcut instead of adding it (ShuffleNet's
stride-2 units) takes the same places: [sc, SE(F(x))], [sc, F(SE(x))],
SE(act([sc, F(x)])) and [SE(sc), F(x)]. Position '3x3' (Table 15) moves the
standard block inside the branch, after the 3x3 convolution. Stochastic depth
(`drop_path_rate`) drops, per example, what a unit adds to its shortcut: the
residual term F(x), SE included. Every unit names its SE block `se`, as
torchvision and timm do, so imported weights map one to one.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from se_flax.layers.drop_path import DropPath
from se_flax.layers.se import SEBlock
from se_flax.layers.se import SESpec

ModuleDef = Any
# The name scope of an SE block's squeeze computed through a 1x1 convolution (`last_norm`): a
# mean, which the paper's cost counts as no multiply-accumulates (models/summary.py).
SQUEEZE_THROUGH_CONV = 'squeeze_through_conv'


class Unit(nn.Module, kw_only=True):
  """The fields every unit takes, by keyword (`Backbone.stages` passes them), and its SE block.

  Attributes:
    conv: the convolution partial the unit builds with (`Backbone.layers`).
    norm: the normalisation partial.
    act: the activation.
    se: SE spec, or None for a unit without an SE block.
    dtype: compute dtype of the SE block.
  """
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  se: Optional[SESpec] = None
  dtype: Any = jnp.float32

  def se_at(self, position: str) -> Optional[SESpec]:
    """The spec where the unit's SE block takes `position` ('last' or '3x3'), else None."""
    return self.se if self.se is not None and self.se.position == position else None

  def last_norm(self, h, conv_1x1=None, **kwargs):
    """The branch's closing BatchNorm (`self.norm(**kwargs)`) on `h`.

    Where the standard SE block follows it and squeezes by the average, the
    result is a `Normalised` (layers/norm.py), which `residual_sum` hands to
    the block: its mean comes from the normalisation's own pass over `h` in
    training, and its product with the gates has one backward pass for both.
    `conv_1x1`: where `h` is the output of a 1x1 convolution, (that
    convolution, its input); evaluation then squeezes the input and convolves
    the means, a linear map commuting with the mean, and the gates no longer
    wait for the whole output (the compiler applies them, the residual sum and
    the activation in the convolution's own pass).
    """
    se = self.se_at('last')
    if se is not None and se.integration == 'standard' and se.squeeze == 'avg':
      input_mean = None
      if conv_1x1 is not None:
        conv, x = conv_1x1

        def input_mean():
          with jax.named_scope(SQUEEZE_THROUGH_CONV):
            return conv(jnp.mean(x, axis=(1, 2), keepdims=True, dtype=jnp.float32))

      return self.norm(**kwargs)(h, spatial_mean=True, input_mean=input_mean)
    return self.norm(**kwargs)(h)

  def se_block(self, x, spec: Optional[SESpec]):
    """`x` rescaled by the unit's SE block made from `spec`; `x` itself where `spec` is None."""
    return x if spec is None else SEBlock(spec, dtype=self.dtype, name='se')(x)


class ResidualUnit(Unit, kw_only=True):
  """A unit that adds its branch to its shortcut, or concatenates the two.

  Attributes:
    drop_path_rate: the probability that a training pass drops the residual
      term of an example (stochastic depth).
  """
  drop_path_rate: float = 0.0

  def combine(self, x, branch, shortcut, train: bool, *, act_after: bool = True,
              concat: bool = False):
    """`residual_sum` with this unit's SE spec and drop rate; `act` after the sum if `act_after`.

    A concatenating unit is never dropped: no other path carries its branch's channels.
    """
    return residual_sum(self, x, branch, shortcut, self.se, self.act if act_after else None,
                        0.0 if concat else self.drop_path_rate, train, concat=concat)


def residual_sum(module, x, branch, shortcut, se: Optional[SESpec], act: Optional[Callable],
                 drop_path_rate: float = 0.0, train: bool = False, *, concat: bool = False):
  """Combines `branch(x)` and `shortcut(x)` with the SE block placed by `se.integration`.

  `branch(x, se_3x3)` receives the spec to use after its 3x3 conv (or None),
  and applies the standard block itself; it returns its output, or
  `Unit.last_norm`'s `Normalised` for the block; `act` is the activation after the add
  (None for pre-activation units). `concat` concatenates [shortcut, branch]
  instead of adding them. With `drop_path_rate` > 0 a training pass drops the
  residual term per example (stochastic depth); at 0 no module is made, so the
  variables are those of the unit without it. The SE block is `module`'s
  submodule `se`, computing in `module.dtype`.
  """
  mode = se.integration if se is not None else None
  make_se = lambda: SEBlock(se, dtype=module.dtype, name='se')
  se_3x3 = se if se is not None and se.position == '3x3' else None

  y = branch(make_se()(x) if mode == 'pre' else x, se_3x3)
  if mode == 'standard' and se.position == 'last':
    y = make_se()(y)  # y may be Unit.last_norm's Normalised
  if drop_path_rate:
    y = DropPath(drop_path_rate, name='drop_path')(y, deterministic=not train)
  sc = shortcut(x)
  if mode == 'identity':
    sc = make_se()(sc)
  out = jnp.concatenate([sc, y], axis=-1) if concat else y + sc
  if act is not None:
    out = act(out)
  if mode == 'post':
    out = make_se()(out)
  return out
