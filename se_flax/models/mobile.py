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
  goes on each unit's residual branch through `unit.residual_sum`, so the
  integrations of Table 14 apply; in the concatenating units their analogues
  do. Position '3x3' gates the depthwise conv's output. Stages: 0, 1, 2 = the
  paper's Stages 2, 3, 4.

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

from typing import Sequence

import flax.linen as nn

from se_flax.models.backbone import Backbone
from se_flax.models.blocks import conv_padded
from se_flax.models.unit import ResidualUnit
from se_flax.models.unit import Unit

MOBILENET_V1_STAGES = ((64,), (128, 128), (256, 256), (512,) * 6, (1024, 1024))


def stem(net, x, train):
  """conv1 -> bn1 -> act, a 3x3 stride-2 conv of `net.stem_width` channels: both networks' stem."""
  conv, norm = net.layers(train)
  x = conv_padded(conv, net.stem_width, 3, 2, name='conv1')(net.inputs(x))
  return net.act(norm(name='bn1')(x))


class DepthwiseSeparable(Unit):
  """3x3 depthwise conv -> BN -> act -> 1x1 conv -> BN -> act, SE after the block (or the 3x3).

  The shared fields are Unit's.
  """
  features: int
  strides: int

  @nn.compact
  def __call__(self, x):
    x = conv_padded(self.conv, x.shape[-1], 3, self.strides, groups=x.shape[-1], name='conv_dw')(x)
    x = self.se_block(self.act(self.norm(name='bn_dw')(x)), self.se_at('3x3'))
    x = conv_padded(self.conv, self.features, 1, name='conv_pw')(x)
    return self.se_block(self.act(self.norm(name='bn_pw')(x)), self.se_at('last'))


class MobileNetV1(Backbone):
  """MobileNet v1 (the shared fields are Backbone's).

  Attributes:
    widths: output widths of the depthwise-separable blocks, by stage; the
      first block of every stage after the first has stride 2.
    stem_width: channels of the stem conv (32).
    dropout: dropout rate before the classifier.
  """
  title = 'MobileNet'
  se_integrations = ('standard',)

  widths: Sequence[Sequence[int]] = MOBILENET_V1_STAGES
  stem_width: int = 32
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = self.stages(
        stem(self, x, train), train, self.widths,
        lambda h, place: DepthwiseSeparable(place.description, place.strides, **place.fields)(h))
    return self.head(x, self.dropout, train)


def channel_shuffle(x, groups):
  """Interleaves the channels of the groups (ShuffleNet section 3.1)."""
  n, h, w, c = x.shape
  return x.reshape(n, h, w, groups, c // groups).swapaxes(3, 4).reshape(n, h, w, c)


class ShuffleUnit(ResidualUnit):
  """A ShuffleNet unit (Fig. 2b: stride 1, add; Fig. 2c: stride 2, concatenate).

  The shared fields are ResidualUnit's; a stride-2 unit is never dropped.
  """
  features: int
  strides: int
  groups: int
  first_grouped: bool = True
  zero_init: bool = True

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
      h = self.se_block(self.norm(name='bn2')(h), se_3x3)
      h = conv_padded(self.conv, out_ch, 1, groups=self.groups, name='conv3')(h)
      return self.norm(name='bn3', scale_init=last_scale)(h)

    if self.strides == 1:
      return self.combine(x, branch, lambda h: h, train)
    pool = lambda h: nn.avg_pool(h, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
    return self.combine(x, branch, pool, train, concat=True)


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
  title = 'ShuffleNet'

  groups: int = 3
  units: Sequence[int] = (4, 8, 4)
  widths: Sequence[int] = (240, 480, 960)
  stem_width: int = 24
  dropout: float = 0.0
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.max_pool(stem(self, x, train), (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])

    def unit(h, place):
      return ShuffleUnit(self.widths[place.stage], place.strides, self.groups,
                         first_grouped=place.stage > 0 or place.index > 0,
                         zero_init=self.zero_init_residual, **place.fields)(h, train)

    # Every stage starts with a stride-2 unit, the first one included.
    x = self.stages(x, train, self.units, unit, drop_path_rate=self.drop_path_rate,
                    downsample_from=0, drop_strided=False)
    return self.head(x, self.dropout, train)
