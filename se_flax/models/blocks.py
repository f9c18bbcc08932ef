"""Residual units and the places an SE block can take in them.

Every unit builds its residual branch and shortcut, and `residual_sum` puts
the SE block where the spec says (paper Fig. 5 and Table 14):

  standard  x + SE(F(x))         the SE-ResNet module (Fig. 3)
  pre       x + F(SE(x))         SE before the residual unit
  post      SE(act(x + F(x)))    SE after the summation
  identity  SE(x) + F(x)         SE on the identity branch

Position '3x3' (Table 15) moves the standard block inside the branch, after
the 3x3 convolution. Stochastic depth (`drop_path_rate`) drops, per example,
what the unit adds to its shortcut: the residual term F(x), SE included.
Module names follow torchvision/timm (conv1, bn1, ..., se, downsample_*) so
imported weights map one to one.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from se_flax.layers.drop_path import DropPath
from se_flax.layers.se import SEBlock, SESpec

ModuleDef = Any


def residual_sum(module, x, branch, shortcut, se: Optional[SESpec], act: Optional[Callable],
                 drop_path_rate: float = 0.0, train: bool = False):
  """Combines `branch(x)` and `shortcut(x)` with the SE block placed by `se.integration`.

  `branch(x, se_3x3)` receives the spec to use after its 3x3 conv (or None),
  and applies the standard block itself; `act` is the activation after the add
  (None for pre-activation units). With `drop_path_rate` > 0 a training pass
  drops the residual term per example (stochastic depth); at 0 no module is
  made, so the variables are those of the unit without it.
  """
  mode = se.integration if se is not None else None
  make_se = lambda: SEBlock(se, dtype=module.dtype, name='se')
  se_3x3 = se if se is not None and se.position == '3x3' else None
  se_last = se if mode == 'standard' and se.position == 'last' else None

  branch_in = make_se()(x) if mode == 'pre' else x
  y = branch(branch_in, se_3x3)
  if se_last is not None:
    y = make_se()(y)
  if drop_path_rate:
    y = DropPath(drop_path_rate, name='drop_path')(y, deterministic=not train)
  sc = shortcut(x)
  if mode == 'identity':
    sc = make_se()(sc)
  out = y + sc
  if act is not None:
    out = act(out)
  if mode == 'post':
    out = make_se()(out)
  return out


def conv_padded(conv, features, kernel, strides=1, groups=1, name=None):
  """A convolution padded k // 2 on every side, as Caffe and PyTorch do (not XLA's SAME)."""
  p = kernel // 2
  return conv(features, (kernel, kernel), strides=(strides, strides), padding=[(p, p), (p, p)],
              feature_group_count=groups, name=name)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions (ResNet-18/34, CIFAR ResNets)."""
  planes: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  se: Optional[SESpec] = None
  shortcut_type: str = 'B'     # 'B': 1x1 projection; 'A': subsample + zero channel padding
  zero_init: bool = True
  # The Caffe-ported SE-ResNet-18/34 (timm's legacy SEResNetBlock) apply a ReLU after bn2, before SE.
  act_before_se: bool = False
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    def branch(h, se_3x3):
      h = conv_padded(self.conv, self.planes, 3, self.strides, name='conv1')(h)
      h = self.act(self.norm(name='bn1')(h))
      if se_3x3 is not None:
        h = SEBlock(se_3x3, dtype=self.dtype, name='se')(h)
      h = conv_padded(self.conv, self.planes, 3, name='conv2')(h)
      h = self.norm(name='bn2', scale_init=_last_scale(self.zero_init))(h)
      return self.act(h) if self.act_before_se else h

    def shortcut(h):
      return projection(self, h, self.planes, self.strides, self.shortcut_type)

    return residual_sum(self, x, branch, shortcut, self.se, self.act, self.drop_path_rate, train)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1, output `planes * 4` channels.

  `stride_in_1x1` puts the stride on the first 1x1 conv (the original Caffe
  ResNet and the paper's SE-ResNet, 3.86 GFLOPs for ResNet-50) instead of the
  3x3 (torchvision "v1.5", 4.09 GFLOPs). SENet-154 halves the first 1x1 width
  (`first_width`) and projects with a 3x3 stride-2 conv (`downsample_kernel`).
  """
  planes: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  width: int
  first_width: int
  groups: int = 1
  stride_in_1x1: bool = False
  downsample_kernel: int = 1
  se: Optional[SESpec] = None
  zero_init: bool = True
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    s1, s3 = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)

    def branch(h, se_3x3):
      h = conv_padded(self.conv, self.first_width, 1, s1, name='conv1')(h)
      h = self.act(self.norm(name='bn1')(h))
      h = conv_padded(self.conv, self.width, 3, s3, self.groups, name='conv2')(h)
      h = self.act(self.norm(name='bn2')(h))
      if se_3x3 is not None:
        h = SEBlock(se_3x3, dtype=self.dtype, name='se')(h)
      h = conv_padded(self.conv, self.planes * 4, 1, name='conv3')(h)
      return self.norm(name='bn3', scale_init=_last_scale(self.zero_init))(h)

    def shortcut(h):
      return projection(self, h, self.planes * 4, self.strides, 'B', self.downsample_kernel)

    return residual_sum(self, x, branch, shortcut, self.se, self.act, self.drop_path_rate, train)


class PreActBlock(nn.Module):
  """Pre-activation unit (He et al. 2016b): BN-ReLU before each conv, nothing after the add.

  `bottleneck=True` gives the 1x1-3x3-1x1 unit of pre-act ResNet-164 (output
  4 * planes); otherwise two 3x3 convs as in Wide ResNets (output planes).
  """
  planes: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  bottleneck: bool = False
  dropout: float = 0.0
  se: Optional[SESpec] = None
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    out_ch = self.planes * 4 if self.bottleneck else self.planes
    pre = self.act(self.norm(name='bn1')(x))
    needs_proj = self.strides != 1 or x.shape[-1] != out_ch

    def branch(h, se_3x3):
      if self.bottleneck:
        h = conv_padded(self.conv, self.planes, 1, name='conv1')(h)
        h = conv_padded(self.conv, self.planes, 3, self.strides, name='conv2')(
            self.act(self.norm(name='bn2')(h)))
        if se_3x3 is not None:
          h = SEBlock(se_3x3, dtype=self.dtype, name='se')(h)
        return conv_padded(self.conv, out_ch, 1, name='conv3')(self.act(self.norm(name='bn3')(h)))
      h = conv_padded(self.conv, self.planes, 3, self.strides, name='conv1')(h)
      if se_3x3 is not None:
        h = SEBlock(se_3x3, dtype=self.dtype, name='se')(h)
      h = self.act(self.norm(name='bn2')(h))
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
      return conv_padded(self.conv, out_ch, 3, name='conv2')(h)

    def shortcut(_):
      # The projection sees the pre-activated input; an identity shortcut sees the raw one.
      if needs_proj:
        return conv_padded(self.conv, out_ch, 1, self.strides, name='downsample_conv')(pre)
      return x

    # The branch always starts from the pre-activation; SE-PRE gates it there.
    return residual_sum(self, pre, branch, shortcut, self.se, None, self.drop_path_rate,
                        train)


def projection(module, x, out_ch, strides, shortcut_type, kernel=1):
  """The shortcut: identity where shapes match, else a projection (type B) or zero padding (type A)."""
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
