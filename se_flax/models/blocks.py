"""Residual units of the ResNets: basic, bottleneck and pre-activation.

Each unit builds its residual branch and shortcut and hands them to
`ResidualUnit.combine`, which places the SE block (unit.py, paper Fig. 5 and
Table 14). Module names follow torchvision/timm (conv1, bn1, ..., se,
downsample_*) so imported weights map one to one.
"""

import flax.linen as nn
import jax.numpy as jnp

from se_flax.models.unit import ResidualUnit


def conv_padded(conv, features, kernel, strides=1, groups=1, name=None):
  """A convolution padded k // 2 on every side, as Caffe and PyTorch do (not XLA's SAME)."""
  p = kernel // 2
  return conv(features, (kernel, kernel), strides=(strides, strides), padding=[(p, p), (p, p)],
              feature_group_count=groups, name=name)


class BasicBlock(ResidualUnit):
  """Two 3x3 convolutions (ResNet-18/34, CIFAR ResNets); the shared fields are ResidualUnit's."""
  planes: int
  strides: int
  shortcut_type: str = 'B'  # 'B': 1x1 projection; 'A': subsample + zero channel padding
  zero_init: bool = True
  # The Caffe-ported SE-ResNet-18/34 (timm's legacy SEResNetBlock): a ReLU after bn2, before SE.
  act_before_se: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):

    def branch(h, se_3x3):
      h = conv_padded(self.conv, self.planes, 3, self.strides, name='conv1')(h)
      h = self.se_block(self.act(self.norm(name='bn1')(h)), se_3x3)
      h = conv_padded(self.conv, self.planes, 3, name='conv2')(h)
      if self.act_before_se:
        return self.act(self.norm(name='bn2', scale_init=_last_scale(self.zero_init))(h))
      return self.last_norm(h, name='bn2', scale_init=_last_scale(self.zero_init))

    def shortcut(h):
      return projection(self, h, self.planes, self.strides, self.shortcut_type)

    return self.combine(x, branch, shortcut, train)


class Bottleneck(ResidualUnit):
  """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1, output `planes * 4` channels.

  `stride_in_1x1` puts the stride on the first 1x1 conv (the original Caffe
  ResNet and the paper's SE-ResNet, 3.86 GFLOPs for ResNet-50) instead of the
  3x3 (torchvision "v1.5", 4.09 GFLOPs). SENet-154 halves the first 1x1 width
  (`first_width`) and projects with a 3x3 stride-2 conv (`downsample_kernel`).
  The shared fields are ResidualUnit's.
  """
  planes: int
  strides: int
  width: int
  first_width: int
  groups: int = 1
  stride_in_1x1: bool = False
  downsample_kernel: int = 1
  zero_init: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    s1, s3 = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)

    def branch(h, se_3x3):
      h = conv_padded(self.conv, self.first_width, 1, s1, name='conv1')(h)
      h = self.act(self.norm(name='bn1')(h))
      h = conv_padded(self.conv, self.width, 3, s3, self.groups, name='conv2')(h)
      h = self.se_block(self.act(self.norm(name='bn2')(h)), se_3x3)
      conv3 = conv_padded(self.conv, self.planes * 4, 1, name='conv3')
      return self.last_norm(conv3(h), (conv3, h), name='bn3',
                            scale_init=_last_scale(self.zero_init))

    def shortcut(h):
      return projection(self, h, self.planes * 4, self.strides, 'B', self.downsample_kernel)

    return self.combine(x, branch, shortcut, train)


class PreActBlock(ResidualUnit):
  """Pre-activation unit (He et al. 2016b): BN-ReLU before each conv, nothing after the add.

  `bottleneck=True` gives the 1x1-3x3-1x1 unit of pre-act ResNet-164 (output
  4 * planes); otherwise two 3x3 convs as in Wide ResNets (output planes).
  The shared fields are ResidualUnit's.
  """
  planes: int
  strides: int
  bottleneck: bool = False
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    out_ch = self.planes * 4 if self.bottleneck else self.planes
    pre = self.act(self.norm(name='bn1')(x))
    needs_proj = self.strides != 1 or x.shape[-1] != out_ch

    def branch(h, se_3x3):
      if self.bottleneck:
        h = conv_padded(self.conv, self.planes, 1, name='conv1')(h)
        h = conv_padded(self.conv, self.planes, 3, self.strides,
                        name='conv2')(self.act(self.norm(name='bn2')(h)))
        h = self.se_block(h, se_3x3)
        return conv_padded(self.conv, out_ch, 1, name='conv3')(self.act(self.norm(name='bn3')(h)))
      h = self.se_block(
          conv_padded(self.conv, self.planes, 3, self.strides, name='conv1')(h), se_3x3)
      h = self.act(self.norm(name='bn2')(h))
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
      return conv_padded(self.conv, out_ch, 3, name='conv2')(h)

    def shortcut(_):
      # The projection sees the pre-activated input; an identity shortcut sees the raw one.
      if needs_proj:
        return conv_padded(self.conv, out_ch, 1, self.strides, name='downsample_conv')(pre)
      return x

    # The branch always starts from the pre-activation; SE-PRE gates it there.
    return self.combine(pre, branch, shortcut, train, act_after=False)


def projection(module, x, out_ch, strides, shortcut_type, kernel=1):
  """The shortcut: identity where shapes match, else a projection (type B) or zero padding (A)."""
  if strides == 1 and x.shape[-1] == out_ch:
    return x
  if shortcut_type == 'A':
    # He et al. 2016, CIFAR option A: parameter-free, subsample then pad channels with zeros.
    y = x[:, ::strides, ::strides, :]
    extra = out_ch - x.shape[-1]
    return jnp.pad(y, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
  y = conv_padded(module.conv, out_ch, kernel, strides, name='downsample_conv')(x)
  return module.norm(name='downsample_bn')(y)


def _last_scale(zero_init):
  # Zero-initialised last BN scale: each unit starts as the identity (Goyal et al. 2017).
  return nn.initializers.zeros if zero_init else nn.initializers.ones
