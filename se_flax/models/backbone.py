"""What every backbone shares: its run-time fields, its layers, its stages of units, its head.

Every backbone stacks units (unit.py) in stages through `Backbone.stages`,
which names each unit `layer{s}_{j}` (the j-th unit of 1-based stage s, as
the ResNets name theirs), decides which units stride, gives each unit the SE
spec of its stage (paper Table 13) and its stochastic-depth rate, and refuses
an SE placement the backbone has no place for (`SESpec.check_placement`) and
inputs too small for it. The rates grow linearly over depth (layers/drop_path.py)
across the residual units only: a unit that concatenates its branch (ShuffleNet's
stride-2 units) is never dropped, and modules between stages (Inception-ResNet-v2's
reductions) are not units. The head classifies globally pooled features in float32.
"""

import functools
from typing import Any, Callable, ClassVar, NamedTuple, Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from se_flax.errors import ConfigError
from se_flax.layers.drop_path import linear_rates
from se_flax.layers.norm import BatchNorm
from se_flax.layers.se import INTEGRATIONS
from se_flax.layers.se import POSITIONS
from se_flax.layers.se import SESpec

# He init (fan_out), as torchvision and timm initialise their convolutions.
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class Place(NamedTuple):
  """One unit's place in the network, as `Backbone.stages` hands it to the unit builder.

  Attributes:
    stage: 0-based stage index.
    index: the unit's index within its stage.
    description: the stage layout's entry for the unit (None where the layout
      gives a count).
    strides: the unit's stride, 1 or 2.
    fields: the `Unit` fields to pass on by keyword: conv, norm, act, se (None
      in a stage the spec leaves out), dtype, name, and drop_path_rate where
      the backbone has residual units.
  """
  stage: int
  index: int
  description: Any
  strides: int
  fields: dict


class Backbone(nn.Module, kw_only=True):
  """The fields every backbone takes; registry presets and config overrides set them by name.

  Attributes:
    num_classes: classifier outputs.
    se: SE spec, or None for the plain network.
    dtype: compute dtype; the classifier runs in float32.
    bn_momentum, bn_epsilon: BatchNorm's running-average momentum and epsilon.
    bn_group_size: 0 for whole-batch statistics, k for groups of k examples.
    zero_init_residual: each unit's last BN scale starts at zero (Goyal et al. 2017).
    act: the activation.

  A subclass states what it admits in class attributes: `title` (its name in
  messages), `se_integrations` and `se_positions` (the SE placements its units
  have a place for). One that cannot take small inputs overrides `min_input`.
  """
  title: ClassVar[str] = 'this backbone'
  se_integrations: ClassVar[Sequence[str]] = INTEGRATIONS
  se_positions: ClassVar[Sequence[str]] = POSITIONS

  num_classes: int
  se: Optional[SESpec] = None
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_group_size: int = 0
  zero_init_residual: bool = True
  act: Callable = nn.relu

  def layers(self, train: bool):
    """The conv and norm partials every unit of this network is built with."""
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=CONV_INIT)
    norm = functools.partial(BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=self.bn_epsilon, group_size=self.bn_group_size,
                             dtype=self.dtype)
    return conv, norm

  def min_input(self) -> int:
    """The smallest input side the network takes; its maps must not vanish before the head."""
    return 1

  def inputs(self, x):
    """`x` in the compute dtype; an input smaller than `min_input()` is refused.

    XLA would not refuse it: pooling and padded convolutions carry an empty map on.
    """
    h, w = x.shape[1:3]
    size = self.min_input()
    if min(h, w) < size:
      raise ConfigError(f'{self.title} needs inputs of at least {size}x{size} pixels, got {h}x{w}; '
                        'raise the image size or choose a model for small images')
    return x.astype(self.dtype)

  def stages(self, x, train: bool, layout: Sequence[Union[int, Sequence[Any]]],
             unit: Callable[[Any, Place], Any], *, drop_path_rate: Optional[float] = None,
             downsample_from: Optional[int] = 1, drop_strided: bool = True,
             after_stage: Optional[Callable[[Any, int], Any]] = None):
    """Applies the stages of units; `unit(x, place)` builds and applies the unit at `place`.

    Args:
      x: the stem's output.
      train: training mode, for the layers' partials.
      layout: per stage, its number of units or their descriptions (a width,
        an Inception module's branches, ...), handed on as `place.description`.
      unit: builds the unit at a `Place` and applies it to `x`.
      drop_path_rate: the stochastic-depth rate of the last residual unit;
        rates are linear from 0 over the residual units. None: the units take
        no rate (they have no shortcut).
      downsample_from: the first unit of every stage from this index on has
        stride 2; None: no unit strides (the backbone pools between stages).
      drop_strided: False where the striding units concatenate their branch:
        they are not residual units, and never dropped.
      after_stage: `after_stage(x, stage)` follows every stage (a pooling or
        a reduction module).
    """
    if self.se is not None:
      self.se.check_placement(self.title, len(layout), self.se_integrations, self.se_positions)
    conv, norm = self.layers(train)
    stages = [[None] * n if isinstance(n, int) else list(n) for n in layout]

    def stride(i, j):
      return 2 if downsample_from is not None and i >= downsample_from and j == 0 else 1

    def residual(i, j):
      return drop_strided or stride(i, j) == 1

    num_residual = sum(residual(i, j) for i, stage in enumerate(stages) for j in range(len(stage)))
    rates = iter(linear_rates(drop_path_rate or 0.0, num_residual))
    for i, stage in enumerate(stages):
      se = self.se if self.se is not None and self.se.in_stage(i) else None
      for j, description in enumerate(stage):
        fields = dict(conv=conv, norm=norm, act=self.act, se=se, dtype=self.dtype,
                      name=f'layer{i + 1}_{j}')
        if drop_path_rate is not None:
          fields['drop_path_rate'] = next(rates) if residual(i, j) else 0.0
        x = unit(x, Place(i, j, description, stride(i, j), fields))
      if after_stage is not None:
        x = after_stage(x, i)
    return x

  def head(self, x, dropout: float = 0.0, train: bool = False):
    """Global average pooling, dropout, and the classifier in float32 (the logits feed the loss)."""
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
    if dropout:
      x = nn.Dropout(dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=jnp.float32, name='fc')(x)


def ceil_mode_padding(x, window: int, stride: int):
  """The padding that makes an unpadded pooling Caffe's ceil mode: at the end only, as needed."""
  return [(0, -(d - window) % stride) for d in x.shape[1:3]]
