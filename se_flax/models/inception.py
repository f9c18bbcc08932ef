"""BN-Inception and Inception-ResNet-v2 with their SE twins (paper section 3.3, Fig. 2, Table 2).

Both networks are built from multi-branch modules described as data: a branch
is a sequence of `Conv` and `Pool` steps, and a module concatenates its
branches.

- BN-Inception (Ioffe & Szegedy 2015), the layout of the Caffe model behind
  the paper's official SE-BN-Inception: 10 Inception modules 3a-5b, of which
  3c and 4e halve the resolution; convolutions without biases, as the 11.93M
  parameters of the Caffe SE-BN-Inception imply (bias_term: false before BN +
  Scale). SE treats the whole module as the transformation and gates its
  concatenated output (Fig. 2), in all ten modules, widths C // 16 (16, 20,
  36, 36, 36, 38, 38, 66, 64, 64).
  Stages: 0 = 3a-3c, 1 = 4a-4e, 2 = 5a-5b; module `layer{s}_{j}` is the j-th
  of stage s (layer1_2 = 3c, layer2_4 = 4e). Inputs: multiples of 32 (the
  reductions need even maps).
- Inception-ResNet-v2 (Szegedy et al. 2017) in timm's `inception_resnet_v2`
  layout (55,843,464 parameters): stem, mixed_5b, 10 Block35 (scale 0.17),
  mixed_6a, 20 Block17 (0.10), mixed_7a, 9 Block8 (0.20) and a last Block8
  (scale 1, no ReLU), conv_7b. SE goes on each residual branch before the sum,
  through `unit.residual_sum`, so all four integrations of Table 14 apply;
  the branch includes its residual scale, so the block gates scale * F(x) (the
  excitation's first layer absorbs the constant). Stages: 0 = the Block35
  units (35x35 at 299), 1 = Block17 (17x17), 2 = Block8 (8x8), named
  `layer{s}_{j}`. Stochastic depth (`drop_path_rate`) drops the scaled
  residual term of each of the 40 units, linearly more often with depth.

Cost (summary.count_macs). BN-Inception: 2.033 GMACs at 224, the paper's 2.03;
11,285,224 parameters, 11,931,622 with SE (about 11.93M). Inception-ResNet-v2:
13.156 GMACs at 299, timm's published 13.18 (0.2% apart), not the paper's
11.75. The gap is not a counting convention (our counter meets the paper's
figures for VGG-16, BN-Inception and MobileNet within 0.3%): it is one step of
grid size. The unpadded stem maps 299 pixels to 35/17/8 grids; the paper's
figure is what this layout costs on 34/16/7 grids, which inputs of 291-298
pixels give (11.69-11.73 GMACs). The preset follows timm's layout and count at
299; tests assert both figures.
"""

import functools
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax.numpy as jnp

from se_flax.errors import ConfigError
from se_flax.models.backbone import Backbone
from se_flax.models.backbone import ceil_mode_padding
from se_flax.models.unit import ResidualUnit
from se_flax.models.unit import Unit


class Conv(NamedTuple):
  """conv -> BN -> act. `pad`: k // 2 on each side (Caffe, PyTorch); False: none (TF 'VALID')."""
  features: int
  kernel: tuple = (1, 1)
  stride: int = 1
  pad: bool = True


class Pool(NamedTuple):
  """A 3x3 pooling. mode 'same': padded by 1; 'valid': unpadded; 'ceil': Caffe's ceil mode."""
  kind: str
  stride: int = 1
  mode: str = 'same'
  count_include_pad: bool = True


def pool3x3(x, step: Pool):
  if step.mode == 'same':
    pads = [(1, 1), (1, 1)]
  elif step.mode == 'valid':
    pads = [(0, 0), (0, 0)]
  else:
    pads = ceil_mode_padding(x, 3, step.stride)
  strides = (step.stride, step.stride)
  if step.kind == 'max':
    return nn.max_pool(x, (3, 3), strides=strides, padding=pads)
  return nn.avg_pool(x, (3, 3), strides=strides, padding=pads,
                     count_include_pad=step.count_include_pad)


class ConvBN(nn.Module):
  """One `Conv` step (timm's BasicConv2d, Caffe's conv + BN + Scale + ReLU)."""
  step: Conv
  conv: Any
  norm: Any
  act: Callable
  width: float = 1.0  # multiplies `step.features` (1 for the published nets)
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    s = self.step
    pads = [(k // 2, k // 2) if s.pad else (0, 0) for k in s.kernel]
    x = self.conv(scaled(s.features, self.width), s.kernel, strides=(s.stride, s.stride),
                  padding=pads, use_bias=self.use_bias, name='conv')(x)
    return self.act(self.norm(name='bn')(x))


def scaled(features, width):
  return max(1, int(round(features * width)))


def run_branches(unit, x, branches, width: float = 1.0, use_bias: bool = False):
  """Concatenates the branches' outputs; each conv is a `ConvBN` `branch{b}_{k}` of `unit`.

  The convs are built with the unit's conv, norm and act, `width` and `use_bias`.
  """
  outs = []
  for b, branch in enumerate(branches):
    h = x
    for k, step in enumerate(branch):
      if isinstance(step, Pool):
        h = pool3x3(h, step)
      else:
        h = ConvBN(step, conv=unit.conv, norm=unit.norm, act=unit.act, width=width,
                   use_bias=use_bias, name=f'branch{b}_{k}')(h)
    outs.append(h)
  sizes = sorted({o.shape[1:3] for o in outs})
  if len(sizes) > 1:
    # Caffe's ceil-mode pool and the padded stride-2 convs only agree on even maps.
    raise ConfigError(f'the branches of an Inception module give maps of sizes {sizes}, which do '
                      'not concatenate: the input size does not fit this network (BN-Inception '
                      'needs inputs whose maps are even at 3c and 4e, e.g. multiples of 32)')
  return jnp.concatenate(outs, axis=-1)


class InceptionModule(Unit):
  """Branches side by side, then SE on the concatenation (paper Fig. 2, SE-Inception module).

  The shared fields are Unit's.

  Attributes:
    branches: the branches, as `Conv` and `Pool` steps.
    width: multiplies every convolution's width.
    conv_bias: biases in the convolutions.
  """
  branches: Sequence
  width: float = 1.0
  conv_bias: bool = False

  @nn.compact
  def __call__(self, x):
    x = run_branches(self, x, self.branches, self.width, self.conv_bias)
    return self.se_block(x, self.se)


def _bn_inception_module(c1, c3r, c3, d3r, d3, pool, proj):
  """An Inception module of the BN-Inception paper (Fig. 5 of Ioffe & Szegedy, Table 1)."""
  return ((Conv(c1),), (Conv(c3r), Conv(c3, (3, 3))), (Conv(d3r), Conv(d3, (3, 3)),
                                                       Conv(d3, (3, 3))), (Pool(pool), Conv(proj)))


def _bn_inception_reduction(c3r, c3, d3r, d3):
  """3c and 4e: the 3x3 branches stride 2, the max-pool passes its input through (ceil mode)."""
  return ((Conv(c3r), Conv(c3, (3, 3),
                           2)), (Conv(d3r), Conv(d3, (3, 3)), Conv(d3, (3, 3),
                                                                   2)), (Pool('max', 2, 'ceil'),))


BN_INCEPTION_STAGES = (
    (
        _bn_inception_module(64, 64, 64, 64, 96, 'avg', 32),  # 3a -> 256
        _bn_inception_module(64, 64, 96, 64, 96, 'avg', 64),  # 3b -> 320
        _bn_inception_reduction(128, 160, 64, 96)),  # 3c -> 576
    (
        _bn_inception_module(224, 64, 96, 96, 128, 'avg', 128),  # 4a -> 576
        _bn_inception_module(192, 96, 128, 96, 128, 'avg', 128),  # 4b -> 576
        _bn_inception_module(160, 128, 160, 128, 160, 'avg', 128),  # 4c -> 608
        _bn_inception_module(96, 128, 192, 160, 192, 'avg', 128),  # 4d -> 608
        _bn_inception_reduction(128, 192, 192, 256)),  # 4e -> 1056
    (
        _bn_inception_module(352, 192, 320, 160, 224, 'avg', 128),  # 5a -> 1024
        _bn_inception_module(352, 192, 320, 192, 224, 'max', 128)),  # 5b -> 1024
)


class BNInception(Backbone):
  """BN-Inception (the shared fields are Backbone's; zero_init_residual has no unit to act on).

  Attributes:
    modules: the Inception modules of each stage, as branch descriptions.
    width: multiplies every convolution's width (1 for the published net).
    conv_bias: biases in the convolutions: none in the Caffe SE-BN-Inception,
      kept by the PyTorch ports of BN-Inception (10,016 parameters more).
    dropout: dropout rate before the classifier.
  """
  title = 'BN-Inception'
  se_integrations = ('standard',)
  se_positions = ('last',)

  modules: Sequence = BN_INCEPTION_STAGES
  width: float = 1.0
  conv_bias: bool = False
  dropout: float = 0.0

  def min_input(self) -> int:
    return 32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = self.layers(train)
    make_conv = functools.partial(ConvBN, conv=conv, norm=norm, act=self.act, width=self.width,
                                  use_bias=self.conv_bias)
    x = make_conv(Conv(64, (7, 7), 2), name='conv1')(self.inputs(x))
    x = pool3x3(x, Pool('max', 2, 'ceil'))
    x = make_conv(Conv(64), name='conv2_reduce')(x)
    x = make_conv(Conv(192, (3, 3)), name='conv2')(x)
    x = pool3x3(x, Pool('max', 2, 'ceil'))
    x = self.stages(
        x, train, self.modules, lambda h, place: InceptionModule(
            place.description, width=self.width, conv_bias=self.conv_bias, **place.fields)(h),
        downsample_from=None)
    return self.head(x, self.dropout, train)


# Inception-ResNet-v2 (timm's layout; Szegedy et al. 2017, Figs. 16-18 with the v2 widths).
BLOCK35 = ((Conv(32),), (Conv(32), Conv(32, (3, 3))), (Conv(32), Conv(48, (3, 3)), Conv(64,
                                                                                        (3, 3))))
BLOCK17 = ((Conv(192),), (Conv(128), Conv(160, (1, 7)), Conv(192, (7, 1))))
BLOCK8 = ((Conv(192),), (Conv(192), Conv(224, (1, 3)), Conv(256, (3, 1))))
MIXED_5B = ((Conv(96),), (Conv(48), Conv(64, (5, 5))), (Conv(64), Conv(96,
                                                                       (3, 3)), Conv(96, (3, 3))),
            (Pool('avg', count_include_pad=False), Conv(64)))
MIXED_6A = ((Conv(384, (3, 3), 2, pad=False),), (Conv(256), Conv(256, (3, 3)),
                                                 Conv(384, (3, 3), 2,
                                                      pad=False)), (Pool('max', 2, 'valid'),))
MIXED_7A = ((Conv(256), Conv(384, (3, 3), 2,
                             pad=False)), (Conv(256), Conv(288, (3, 3), 2, pad=False)),
            (Conv(256), Conv(288, (3, 3)), Conv(320, (3, 3), 2,
                                                pad=False)), (Pool('max', 2, 'valid'),))
IRV2_UNITS = ((BLOCK35, 0.17), (BLOCK17, 0.10), (BLOCK8, 0.20))


class InceptionResidual(ResidualUnit):
  """x + scale * up(concat(branches(x))), then act; SE placed by `residual_sum` (Table 14).

  The shared fields are ResidualUnit's.

  Attributes:
    branches: the branches, as `Conv` steps.
    scale: the residual scale.
    width: multiplies every convolution's width of the branches.
    zero_init: the up-projection starts at zero, and the unit as the identity.
    act_after_sum: False for timm's last `block8`, which has no ReLU after its sum.
  """
  branches: Sequence
  scale: float
  width: float = 1.0
  zero_init: bool = True
  act_after_sum: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    channels = x.shape[-1]

    def branch(h, se_3x3):
      del se_3x3  # the backbone admits position 'last' only
      h = run_branches(self, h, self.branches, self.width)
      # The up-projection has a bias and no BN.
      init = dict(kernel_init=nn.initializers.zeros) if self.zero_init else {}
      h = self.conv(channels, (1, 1), use_bias=True, name='conv', **init)(h)
      return h * self.scale

    return self.combine(x, branch, lambda h: h, train, act_after=self.act_after_sum)


class InceptionResNetV2(Backbone):
  """Inception-ResNet-v2 for inputs of at least 75 pixels (the stem and reductions are unpadded).

  The shared fields are Backbone's; zero_init_residual starts each residual
  unit's up-projection at zero.

  Attributes:
    units: residual units per stage, (10, 20, 10); the last unit of the last
      stage has scale 1 and no ReLU, as timm's `block8`.
    width: multiplies every convolution's width (1 for the published net).
    dropout: dropout rate before the classifier.
    drop_path_rate: stochastic depth of the last residual unit; linear from 0 over the units.
  """
  title = 'Inception-ResNet-v2'
  se_positions = ('last',)

  units: Sequence[int] = (10, 20, 10)
  width: float = 1.0
  dropout: float = 0.0
  drop_path_rate: float = 0.0
  bn_epsilon: float = 1e-3  # timm's (TF's); config.model.bn_epsilon overrides it

  def min_input(self) -> int:
    return 75

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = self.layers(train)
    make_conv = functools.partial(ConvBN, conv=conv, norm=norm, act=self.act, width=self.width)
    module = functools.partial(InceptionModule, conv=conv, norm=norm, act=self.act,
                               width=self.width)
    x = make_conv(Conv(32, (3, 3), 2, pad=False), name='conv2d_1a')(self.inputs(x))
    x = make_conv(Conv(32, (3, 3), pad=False), name='conv2d_2a')(x)
    x = make_conv(Conv(64, (3, 3)), name='conv2d_2b')(x)
    x = pool3x3(x, Pool('max', 2, 'valid'))
    x = make_conv(Conv(80), name='conv2d_3b')(x)
    x = make_conv(Conv(192, (3, 3), pad=False), name='conv2d_4a')(x)
    x = pool3x3(x, Pool('max', 2, 'valid'))
    x = module(MIXED_5B, name='mixed_5b')(x)

    def unit(h, place):
      branches, scale = place.description
      last = place.stage == len(self.units) - 1 and place.index == self.units[-1] - 1
      return InceptionResidual(branches, 1.0 if last else scale, width=self.width,
                               zero_init=self.zero_init_residual, act_after_sum=not last,
                               **place.fields)(h, train)

    def reduction(h, stage):
      # The reductions between the stages are not units: no SE block, never dropped.
      reductions = (MIXED_6A, MIXED_7A)
      return module(reductions[stage], name=f'mixed_{6 + stage}a')(h) if stage < 2 else h

    layout = [(kind,) * n for kind, n in zip(IRV2_UNITS, self.units)]
    x = self.stages(x, train, layout, unit, drop_path_rate=self.drop_path_rate,
                    downsample_from=None, after_stage=reduction)
    x = make_conv(Conv(1536), name='conv2d_7b')(x)
    return self.head(x, self.dropout, train)
