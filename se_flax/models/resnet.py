"""ImageNet backbones: ResNet-18..152, ResNeXt-50/101 (32x4d) and SENet-154.

One `ResNet` class; presets in registry.py are partials of it (the flax
ImageNet example's pattern). SE blocks go into the stages named by the spec.
SENet-154 follows the paper's Appendix: a 64x4d ResNeXt-152 layout whose
first 1x1 conv in each bottleneck is halved, three 3x3 stem convs instead of
the 7x7, 3x3 stride-2 projection convs, and dropout 0.2 before the classifier.
"""

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from se_flax.layers.se import SESpec
from se_flax.models.blocks import BasicBlock, Bottleneck, conv_padded, layer_factories


class ResNet(nn.Module):
  """Residual network with optional SE blocks.

  Attributes:
    stage_sizes: units per stage.
    block: 'basic' or 'bottleneck'.
    num_classes: classifier outputs.
    se: SE spec, or None for the plain network.
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
  """
  stage_sizes: Sequence[int]
  block: str
  num_classes: int
  se: Optional[SESpec] = None
  groups: int = 1
  base_width: int = 64
  stem: str = 'resnet'
  stem_pool: str = 'pad1'
  stride_in_1x1: bool = False
  first_width_factor: float = 1.0
  downsample_kernel: int = 1
  dropout: float = 0.0
  basic_act_before_se: bool = False
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_group_size: int = 0
  zero_init_residual: bool = True
  act: Callable = nn.relu

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = layer_factories(self, train)
    if self.se is not None:
      self.se.check_stages(len(self.stage_sizes))
    x = x.astype(self.dtype)

    if self.stem == 'deep':
      for i, width in enumerate((64, 64, 128)):
        x = conv_padded(conv, width, 3, 2 if i == 0 else 1, name=f'stem_conv{i + 1}')(x)
        x = self.act(norm(name=f'stem_bn{i + 1}')(x))
    else:
      x = conv_padded(conv, 64, 7, 2, name='conv1')(x)
      x = self.act(norm(name='bn1')(x))
    if self.stem_pool == 'ceil':
      # Ceil-mode pooling without padding == pooling padded at the end only, as far as needed.
      pads = [(0, (-(d - 3) % 2)) for d in x.shape[1:3]]
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=pads)
    else:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    for i, num_blocks in enumerate(self.stage_sizes):
      planes = 64 * 2 ** i
      se = self.se if self.se is not None and self.se.in_stage(i) else None
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        name = f'layer{i + 1}_{j}'
        if self.block == 'basic':
          x = BasicBlock(planes, strides, conv, norm, self.act, se=se,
                         zero_init=self.zero_init_residual, act_before_se=self.basic_act_before_se,
                         dtype=self.dtype, name=name)(x)
        else:
          width = int(planes * self.base_width / 64) * self.groups
          x = Bottleneck(planes, strides, conv, norm, self.act, width=width,
                         first_width=int(width * self.first_width_factor), groups=self.groups,
                         stride_in_1x1=self.stride_in_1x1,
                         downsample_kernel=self.downsample_kernel if i > 0 else 1,
                         se=se, zero_init=self.zero_init_residual, dtype=self.dtype, name=name)(x)

    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    # The classifier runs in float32: logits feed the float32 loss.
    return nn.Dense(self.num_classes, dtype=jnp.float32, name='fc')(x)
