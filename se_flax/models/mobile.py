"""MobileNet v1 and ShuffleNet v1 with their SE twins (paper section 5.1, Table 3).

- MobileNet 1.0-224 (Howard et al. 2017): a 3x3 stride-2 stem of 32 channels
  and 13 depthwise-separable blocks (3x3 depthwise conv, BN, ReLU, 1x1 conv,
  BN, ReLU). SE follows each block, on its output; position '3x3' (as Table
  15 moves the block) puts it after the depthwise conv instead. Stages, split
  where the resolution halves: 0 = block 1 (112x112 at 224), 1 = blocks 2-3
  (56), 2 = blocks 4-5 (28), 3 = blocks 6-11 (14), 4 = blocks 12-13 (7).
  4,231,976 parameters, as timm's mobilenetv1_100.
- ShuffleNet 1x, g = 3 (Zhang et al. 2018, Fig. 2 and Table 1): a 3x3 stride-2
  stem of 24 channels and a max-pool, then three stages of 4, 8, 4 units at
  240, 480, 960 channels. A unit is 1x1 group conv, BN, ReLU, channel shuffle,
  3x3 depthwise conv, BN, 1x1 group conv, BN; stride-1 units add the input and
  apply ReLU, stride-2 units concatenate a 3x3 average-pooled input instead
  (the first 1x1 conv of the whole network is not grouped: 24 channels). SE
  goes on each unit's residual branch through `blocks.residual_sum`, so the
  integrations of Table 14 apply; in the concatenating units their analogues
  do (`concat_sum`). Position '3x3' gates the depthwise conv's output. Stages:
  0, 1, 2 = the paper's Stages 2, 3, 4.

Cost (summary.count_macs, 224 input). MobileNet: 0.569 GMACs, the paper's figure.
ShuffleNet: 0.137 GMACs and 1,865,728 parameters; the official release lists
138M and 1.9M, the paper rounds to 0.140 and prints 1.8M. The paper's SE
columns (0.572, 0.142) also count the channel-wise rescaling, one multiply per
gated activation (2.7M and 1.6M here), which the counter leaves out with every
element-wise op; with it, the SE blocks add the paper's 0.003 and 0.002 G.

zero_init_residual: the last BN scale of each stride-1 ShuffleNet unit starts
at zero; MobileNet has no residual units, so it changes nothing there.

Stochastic depth (`drop_path_rate`, ShuffleNet only): the stride-1 units are
the residual ones, and their rates grow linearly over them in order. A
stride-2 unit concatenates its branch instead of adding it, so dropping the
branch would leave no path for those channels: it is never dropped.
"""

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from se_flax.layers.drop_path import linear_rates
from se_flax.layers.se import INTEGRATIONS, POSITIONS, SEBlock, SESpec
from se_flax.models.backbone import Backbone
from se_flax.models.blocks import conv_padded, residual_sum
from se_flax.models.vgg import check_se, stage_se

MOBILENET_V1_STAGES = ((64,), (128, 128), (256, 256), (512,) * 6, (1024, 1024))


class DepthwiseSeparable(nn.Module):
  """3x3 depthwise conv -> BN -> act -> 1x1 conv -> BN -> act, SE after the block (or the 3x3)."""
  features: int
  strides: int
  conv: Any
  norm: Any
  act: Callable
  se: Optional[SESpec] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    se_at = self.se.position if self.se is not None else None
    x = conv_padded(self.conv, x.shape[-1], 3, self.strides, groups=x.shape[-1], name='conv_dw')(x)
    x = self.act(self.norm(name='bn_dw')(x))
    if se_at == '3x3':
      x = SEBlock(self.se, dtype=self.dtype, name='se')(x)
    x = conv_padded(self.conv, self.features, 1, name='conv_pw')(x)
    x = self.act(self.norm(name='bn_pw')(x))
    if se_at == 'last':
      x = SEBlock(self.se, dtype=self.dtype, name='se')(x)
    return x


class MobileNetV1(Backbone):
  """MobileNet v1 (the shared fields are Backbone's).

  Attributes:
    widths: output widths of the depthwise-separable blocks, by stage; the
      first block of every stage after the first has stride 2.
    stem_width: channels of the stem conv (32).
    dropout: dropout rate before the classifier.
  """
  widths: Sequence[Sequence[int]] = MOBILENET_V1_STAGES
  stem_width: int = 32
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = self.layers(train)
    check_se(self.se, 'MobileNet', len(self.widths), positions=POSITIONS)
    x = conv_padded(conv, self.stem_width, 3, 2, name='conv1')(x.astype(self.dtype))
    x = self.act(norm(name='bn1')(x))
    for i, stage in enumerate(self.widths):
      for j, features in enumerate(stage):
        x = DepthwiseSeparable(features, 2 if i > 0 and j == 0 else 1, conv, norm, self.act,
                               se=stage_se(self.se, i), dtype=self.dtype,
                               name=f'layer{i + 1}_{j}')(x)
    return self.head(x, self.dropout, train)


def channel_shuffle(x, groups):
  """Interleaves the channels of the groups (ShuffleNet section 3.1)."""
  n, h, w, c = x.shape
  return x.reshape(n, h, w, groups, c // groups).swapaxes(3, 4).reshape(n, h, w, c)


def concat_sum(module, x, branch, shortcut, se: Optional[SESpec], act):
  """`residual_sum`'s SE placements for a unit that concatenates its shortcut instead of adding it.

  standard: [sc, SE(F(x))]; pre: [sc, F(SE(x))]; identity: [SE(sc), F(x)];
  post: SE(act([sc, F(x)])).
  """
  mode = se.integration if se is not None else None
  make_se = lambda: SEBlock(se, dtype=module.dtype, name='se')
  se_3x3 = se if se is not None and se.position == '3x3' else None
  y = branch(make_se()(x) if mode == 'pre' else x, se_3x3)
  if mode == 'standard' and se.position == 'last':
    y = make_se()(y)
  sc = shortcut(x)
  if mode == 'identity':
    sc = make_se()(sc)
  out = act(jnp.concatenate([sc, y], axis=-1))
  return make_se()(out) if mode == 'post' else out


class ShuffleUnit(nn.Module):
  """A ShuffleNet unit (Fig. 2b: stride 1, add; Fig. 2c: stride 2, concatenate)."""
  features: int
  strides: int
  groups: int
  conv: Any
  norm: Any
  act: Callable
  first_grouped: bool = True
  se: Optional[SESpec] = None
  zero_init: bool = True
  drop_path_rate: float = 0.0   # stride-1 units only
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    in_ch = x.shape[-1]
    # The bottleneck is a quarter of the unit's output; a stride-2 branch emits what the
    # pooled shortcut does not.
    mid = self.features // 4
    out_ch = self.features - in_ch if self.strides == 2 else self.features
    zero = self.zero_init and self.strides == 1
    last_scale = nn.initializers.zeros if zero else nn.initializers.ones

    def branch(h, se_3x3):
      h = conv_padded(self.conv, mid, 1, groups=self.groups if self.first_grouped else 1,
                      name='conv1')(h)
      h = channel_shuffle(self.act(self.norm(name='bn1')(h)), self.groups)
      h = conv_padded(self.conv, mid, 3, self.strides, groups=mid, name='conv2')(h)
      h = self.norm(name='bn2')(h)
      if se_3x3 is not None:
        h = SEBlock(se_3x3, dtype=self.dtype, name='se')(h)
      h = conv_padded(self.conv, out_ch, 1, groups=self.groups, name='conv3')(h)
      return self.norm(name='bn3', scale_init=last_scale)(h)

    if self.strides == 1:
      return residual_sum(self, x, branch, lambda h: h, self.se, self.act, self.drop_path_rate,
                          train)
    pool = lambda h: nn.avg_pool(h, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
    return concat_sum(self, x, branch, pool, self.se, self.act)


class ShuffleNetV1(Backbone):
  """ShuffleNet v1 (the shared fields are Backbone's).

  Attributes:
    groups: g, the groups of the 1x1 convolutions (3).
    units: units per stage (4, 8, 4).
    widths: output channels per stage (240, 480, 960 for g = 3 at 1x).
    stem_width: channels of the stem conv (24).
    dropout: dropout rate before the classifier.
    drop_path_rate: stochastic depth of the last stride-1 unit; linear from 0 over them.
  """
  groups: int = 3
  units: Sequence[int] = (4, 8, 4)
  widths: Sequence[int] = (240, 480, 960)
  stem_width: int = 24
  dropout: float = 0.0
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = self.layers(train)
    check_se(self.se, 'ShuffleNet', len(self.units), integrations=INTEGRATIONS,
             positions=POSITIONS)
    x = conv_padded(conv, self.stem_width, 3, 2, name='conv1')(x.astype(self.dtype))
    x = self.act(norm(name='bn1')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])

    drops = iter(linear_rates(self.drop_path_rate, sum(n - 1 for n in self.units)))
    for i, n in enumerate(self.units):
      for j in range(n):
        # Every stage starts with a stride-2 unit, the first one included.
        x = ShuffleUnit(self.widths[i], 2 if j == 0 else 1, self.groups, conv, norm, self.act,
                        first_grouped=i > 0 or j > 0, se=stage_se(self.se, i),
                        zero_init=self.zero_init_residual,
                        drop_path_rate=next(drops) if j > 0 else 0.0, dtype=self.dtype,
                        name=f'layer{i + 1}_{j}')(x, train)
    return self.head(x, self.dropout, train)
