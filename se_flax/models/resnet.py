"""ImageNet backbones: ResNet-18..152, ResNeXt-50/101 (32x4d) and SENet-154.

One `ResNet` class; presets in registry.py are partials of it (the flax
ImageNet example's pattern). SE blocks go into the stages named by the spec.
SENet-154 follows the paper's Appendix: a 64x4d ResNeXt-152 layout whose
first 1x1 conv in each bottleneck is halved, three 3x3 stem convs instead of
the 7x7, 3x3 stride-2 projection convs, and dropout 0.2 before the classifier.
"""

from typing import Sequence

import flax.linen as nn

from se_flax.models.backbone import Backbone
from se_flax.models.backbone import ceil_mode_padding
from se_flax.models.blocks import BasicBlock
from se_flax.models.blocks import Bottleneck
from se_flax.models.blocks import conv_padded


class ResNet(Backbone):
  """Residual network with optional SE blocks (the shared fields are Backbone's).

  Attributes:
    stage_sizes: units per stage.
    block: 'basic' or 'bottleneck'.
    groups, base_width: ResNeXt cardinality and width per group (32, 4 for 32x4d).
    stem: 'resnet' (7x7 conv, 64) or 'deep' (3x3 convs 64, 64, 128: SENet-154).
    stem_pool: 'pad1' (3x3/2 max-pool padded by 1, torchvision) or 'ceil'
      (no padding, ceil mode: the Caffe models).
    stride_in_1x1: put the stride on the bottleneck's first 1x1 conv (paper layout).
    first_width_factor: width of the first 1x1 conv over the 3x3 width (0.5 for SENet-154).
    downsample_kernel: kernel of the projection convs after stage 1 (3 for SENet-154).
    dropout: dropout rate before the classifier.
    basic_act_before_se: basic units apply their activation after the last BN,
      before SE and the add (the Caffe-ported SE-ResNet-18/34).
    drop_path_rate: stochastic depth of the last unit; linear from 0 over the units.
  """
  title = 'ResNet'

  stage_sizes: Sequence[int]
  block: str
  groups: int = 1
  base_width: int = 64
  stem: str = 'resnet'
  stem_pool: str = 'pad1'
  stride_in_1x1: bool = False
  first_width_factor: float = 1.0
  downsample_kernel: int = 1
  dropout: float = 0.0
  basic_act_before_se: bool = False
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = self.layers(train)
    x = self.inputs(x)

    if self.stem == 'deep':
      for i, width in enumerate((64, 64, 128)):
        x = conv_padded(conv, width, 3, 2 if i == 0 else 1, name=f'stem_conv{i + 1}')(x)
        x = self.act(norm(name=f'stem_bn{i + 1}')(x))
    else:
      x = conv_padded(conv, 64, 7, 2, name='conv1')(x)
      x = self.act(norm(name='bn1')(x))
    pads = ceil_mode_padding(x, 3, 2) if self.stem_pool == 'ceil' else ((1, 1), (1, 1))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=pads)

    def unit(h, place):
      planes = 64 * 2 ** place.stage
      if self.block == 'basic':
        return BasicBlock(planes, place.strides, zero_init=self.zero_init_residual,
                          act_before_se=self.basic_act_before_se, **place.fields)(h, train)
      width = int(planes * self.base_width / 64) * self.groups
      return Bottleneck(planes, place.strides, width=width,
                        first_width=int(width * self.first_width_factor), groups=self.groups,
                        stride_in_1x1=self.stride_in_1x1,
                        downsample_kernel=self.downsample_kernel if place.stage > 0 else 1,
                        zero_init=self.zero_init_residual, **place.fields)(h, train)

    x = self.stages(x, train, self.stage_sizes, unit, drop_path_rate=self.drop_path_rate)
    return self.head(x, self.dropout, train)
