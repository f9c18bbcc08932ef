"""CIFAR backbones of the paper's Tables 4 and 5.

- ResNet-20..110 (He et al. 2016, section 4.2): a 3x3 stem of 16 channels,
  three stages of n basic units at 16, 32, 64 channels, option-A shortcuts.
- Pre-activation ResNet-164 (He et al. 2016b): 18 bottleneck units per stage.
- WRN-16-8 (Zagoruyko & Komodakis 2016): pre-activation basic units, widths
  16k, 32k, 64k with k = 8, 1x1 projections where shapes change.
"""

import flax.linen as nn

from se_flax.models.backbone import Backbone
from se_flax.models.blocks import BasicBlock
from se_flax.models.blocks import conv_padded
from se_flax.models.blocks import PreActBlock


class CifarResNet(Backbone):
  """The three-stage CIFAR network family (the shared fields are Backbone's).

  Attributes:
    depth: network depth as named in the papers (20, 56, 110, 164, 16).
    kind: 'basic' (post-activation ResNet), 'preact_bottleneck' or 'wide'.
    widen: width multiplier of a Wide ResNet.
    dropout: dropout rate between the two convs of a wide unit.
    drop_path_rate: stochastic depth of the last unit; linear from 0 over the units.
  """
  title = 'CIFAR ResNet'

  depth: int
  kind: str
  widen: int = 1
  dropout: float = 0.0
  drop_path_rate: float = 0.0

  def units_per_stage(self):
    per_unit = {'basic': 2, 'preact_bottleneck': 3, 'wide': 2}[self.kind]
    units, rem = divmod(self.depth - (4 if self.kind == 'wide' else 2), 3 * per_unit)
    if rem or units < 1:
      raise ValueError(f'depth {self.depth} does not fit a {self.kind} CIFAR network: it must be '
                       f'{3 * per_unit}n + {4 if self.kind == "wide" else 2}')
    return units

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = self.layers(train)
    n = self.units_per_stage()
    x = conv_padded(conv, 16, 3, name='conv1')(self.inputs(x))
    if self.kind == 'basic':
      x = self.act(norm(name='bn1')(x))

    def unit(h, place):
      planes = 16 * 2 ** place.stage * self.widen
      if self.kind == 'basic':
        return BasicBlock(planes, place.strides, shortcut_type='A',
                          zero_init=self.zero_init_residual, **place.fields)(h, train)
      return PreActBlock(planes, place.strides, bottleneck=self.kind == 'preact_bottleneck',
                         dropout=self.dropout, **place.fields)(h, train=train)

    x = self.stages(x, train, (n,) * 3, unit, drop_path_rate=self.drop_path_rate)
    if self.kind != 'basic':
      x = self.act(norm(name='bn_final')(x))
    return self.head(x)
