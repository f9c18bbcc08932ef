"""CIFAR backbones of the paper's Tables 4 and 5.

- ResNet-20..110 (He et al. 2016, section 4.2): a 3x3 stem of 16 channels,
  three stages of n basic units at 16, 32, 64 channels, option-A shortcuts.
- Pre-activation ResNet-164 (He et al. 2016b): 18 bottleneck units per stage.
- WRN-16-8 (Zagoruyko & Komodakis 2016): pre-activation basic units, widths
  16k, 32k, 64k with k = 8, 1x1 projections where shapes change.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from se_flax.layers.se import SESpec
from se_flax.models.blocks import BasicBlock, PreActBlock, conv_padded, layer_factories


class CifarResNet(nn.Module):
  """The three-stage CIFAR network family.

  Attributes:
    depth: network depth as named in the papers (20, 56, 110, 164, 16).
    kind: 'basic' (post-activation ResNet), 'preact_bottleneck' or 'wide'.
    widen: width multiplier of a Wide ResNet.
  """
  depth: int
  kind: str
  num_classes: int
  se: Optional[SESpec] = None
  widen: int = 1
  dropout: float = 0.0
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_group_size: int = 0
  zero_init_residual: bool = True
  act: Callable = nn.relu

  def units_per_stage(self):
    per_unit = {'basic': 2, 'preact_bottleneck': 3, 'wide': 2}[self.kind]
    units, rem = divmod(self.depth - (4 if self.kind == 'wide' else 2), 3 * per_unit)
    if rem or units < 1:
      raise ValueError(f'depth {self.depth} does not fit a {self.kind} CIFAR network: it must be '
                       f'{3 * per_unit}n + {4 if self.kind == "wide" else 2}')
    return units

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = layer_factories(self, train)
    if self.se is not None:
      self.se.check_stages(3)
    n = self.units_per_stage()
    x = conv_padded(conv, 16, 3, name='conv1')(x.astype(self.dtype))
    if self.kind == 'basic':
      x = self.act(norm(name='bn1')(x))

    for i in range(3):
      planes = 16 * 2 ** i * self.widen
      se = self.se if self.se is not None and self.se.in_stage(i) else None
      for j in range(n):
        strides = 2 if i > 0 and j == 0 else 1
        name = f'layer{i + 1}_{j}'
        if self.kind == 'basic':
          x = BasicBlock(planes, strides, conv, norm, self.act, se=se, shortcut_type='A',
                         zero_init=self.zero_init_residual, dtype=self.dtype, name=name)(x)
        else:
          x = PreActBlock(planes, strides, conv, norm, self.act,
                          bottleneck=self.kind == 'preact_bottleneck', dropout=self.dropout,
                          se=se, dtype=self.dtype, name=name)(x, train=train)

    if self.kind != 'basic':
      x = self.act(norm(name='bn_final')(x))
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
    return nn.Dense(self.num_classes, dtype=jnp.float32, name='fc')(x)
