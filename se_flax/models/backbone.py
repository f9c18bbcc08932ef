"""What every backbone shares: its run-time fields, its layers, its stages of units, its head.

ResNet (resnet.py) and CifarResNet (cifar.py) differ in the stem and in the
unit they stack. Both put SE blocks into the stages `SESpec.stages` names
(paper Table 13) and classify globally pooled features in float32. The
residual backbones (those with a `drop_path_rate` field: ResNet, CifarResNet,
InceptionResNetV2, ShuffleNetV1) give their units stochastic-depth rates that
grow linearly over depth (layers/drop_path.py).
"""

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from se_flax.layers.drop_path import linear_rates
from se_flax.layers.norm import BatchNorm
from se_flax.layers.se import SESpec

# He init (fan_out), as torchvision and timm initialise their convolutions.
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


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
  """
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

  def stages(self, x, sizes: Sequence[int], unit: Callable, drop_path_rate: float = 0.0):
    """Stacks `sizes[i]` units in stage i; `unit(x, stage, strides, se, drop, name)` applies one.

    The first unit of every stage after the first halves the resolution; units
    of the stages the spec leaves out get `se=None`. `drop` is the unit's
    stochastic-depth rate, linear over all units from 0 to `drop_path_rate`.
    """
    if self.se is not None:
      self.se.check_stages(len(sizes))
    drops = iter(linear_rates(drop_path_rate, sum(sizes)))
    for i, num_units in enumerate(sizes):
      se = self.se if self.se is not None and self.se.in_stage(i) else None
      for j in range(num_units):
        x = unit(x, i, 2 if i > 0 and j == 0 else 1, se, next(drops), f'layer{i + 1}_{j}')
    return x

  def head(self, x, dropout: float = 0.0, train: bool = False):
    """Global average pooling, dropout, and the classifier in float32 (the logits feed the loss)."""
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
    if dropout:
      x = nn.Dropout(dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=jnp.float32, name='fc')(x)
