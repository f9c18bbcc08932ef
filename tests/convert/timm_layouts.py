"""The state-dict layout ([key, shape] in timm's order) of every full-size timm network we import.

Written from timm's constructors (`timm.models.resnet.ResNet`,
`timm.models.senet.SENet`, `timm.models.vgg.VGG`,
`timm.models.inception_resnet_v2.InceptionResnetV2`), independently of the converter's plan, so that the
full-size parity fixtures need to store neither weights nor key lists:
make_fixtures.py checks `layout(name)` against the state dict of
`timm.create_model(name)`, and each fixture's digest covers the names and
shapes as well as the values.

Pure Python: the generator imports this file by path, the tests as
`tests.convert.timm_layouts`.
"""

import math

NUM_CLASSES = 1000
_DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3)
}


def _resnet(depth, se=False, groups=1, base_width=64):
  block = 'basic' if depth < 50 else 'bottleneck'
  return dict(family='resnet', block=block, stage_sizes=_DEPTHS[depth], se=se, groups=groups,
              base_width=base_width)


def _senet(depth, block, groups=1, **extra):
  return dict(family='senet', block=block, stage_sizes=_DEPTHS[depth], se=True, groups=groups,
              **extra)


# timm name -> the constructor arguments that fix its tensors.
ARCHITECTURES = {
    'resnet18': _resnet(18),
    'resnet34': _resnet(34),
    'resnet50': _resnet(50),
    'resnet101': _resnet(101),
    'resnet152': _resnet(152),
    'resnext50_32x4d': _resnet(50, groups=32, base_width=4),
    'resnext101_32x4d': _resnet(101, groups=32, base_width=4),
    'seresnet18': _resnet(18, se=True),
    'seresnet34': _resnet(34, se=True),
    'seresnet50': _resnet(50, se=True),
    'seresnet101': _resnet(101, se=True),
    'seresnet152': _resnet(152, se=True),
    'seresnext50_32x4d': _resnet(50, se=True, groups=32, base_width=4),
    'seresnext101_32x4d': _resnet(101, se=True, groups=32, base_width=4),
    'legacy_seresnet18': _senet(18, 'SEResNetBlock'),
    'legacy_seresnet34': _senet(34, 'SEResNetBlock'),
    'legacy_seresnet50': _senet(50, 'SEResNetBottleneck'),
    'legacy_seresnet101': _senet(101, 'SEResNetBottleneck'),
    'legacy_seresnet152': _senet(152, 'SEResNetBottleneck'),
    'legacy_seresnext50_32x4d': _senet(50, 'SEResNeXtBottleneck', groups=32),
    'legacy_seresnext101_32x4d': _senet(101, 'SEResNeXtBottleneck', groups=32),
    'legacy_senet154': _senet(152, 'SEBottleneck', groups=64, deep_stem=True, downsample_kernel=3),
    'vgg16_bn': dict(family='vgg'),
    'inception_resnet_v2': dict(family='inception_resnet_v2'),
}


def _bn(prefix, channels):
  return [
      [f'{prefix}.{leaf}', [channels]] for leaf in ('weight', 'bias', 'running_mean', 'running_var')
  ] + [[f'{prefix}.num_batches_tracked', []]]


def _conv(key, out, inp, k):
  return [[f'{key}.weight', [out, inp, k, k]]]


def _se(prefix, channels, reduced):
  return [[f'{prefix}.fc1.weight', [reduced, channels, 1, 1]], [f'{prefix}.fc1.bias', [reduced]],
          [f'{prefix}.fc2.weight', [channels, reduced, 1, 1]], [f'{prefix}.fc2.bias', [channels]]]


def _make_divisible8(v):
  # timm.layers.make_divisible(v, 8) with round_limit=0: SEModule's reduced width.
  return max(8, int(v + 4) // 8 * 8)


def _convs(arch, planes, inplanes):
  """[(kernel, out, in, groups)] of one unit's convs, and the unit's output width."""
  groups, block = arch['groups'], arch['block']
  if block in ('basic', 'SEResNetBlock'):
    return [(3, planes, inplanes, 1), (3, planes, planes, 1)], planes
  if block == 'SEBottleneck':
    mid = planes * 2
    return [(1, mid, inplanes, 1), (3, planes * 4, mid, groups), (1, planes * 4, planes * 4, 1)], \
        planes * 4
  if block == 'SEResNetBottleneck':
    width = planes
  elif arch['family'] == 'resnet':
    width = int(planes * arch['base_width'] / 64) * groups
  else:  # SEResNeXtBottleneck
    width = math.floor(planes * 4 / 64) * groups
  return [(1, width, inplanes, 1), (3, width, width, groups), (1, planes * 4, width, 1)], planes * 4


def _vgg16_bn():
  # torchvision's cfg 'D': widths, 'M' for a max-pool; each conv is conv, BN, ReLU in `features`.
  cfg = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M']
  out, index, inp = [], 0, 3
  for width in cfg:
    if width == 'M':
      index += 1
      continue
    out += _conv(f'features.{index}', width, inp, 3) + [[f'features.{index}.bias', [width]]]
    out += _bn(f'features.{index + 1}', width)
    index, inp = index + 3, width
  for name, o, i, k in (('fc1', 4096, 512, 7), ('fc2', 4096, 4096, 1)):
    out += _conv(f'pre_logits.{name}', o, i, k) + [[f'pre_logits.{name}.bias', [o]]]
  return out + [['head.fc.weight', [NUM_CLASSES, 4096]], ['head.fc.bias', [NUM_CLASSES]]]


def _basic_conv(prefix, out, inp, kernel):
  kh, kw = kernel if isinstance(kernel, tuple) else (kernel, kernel)
  return [[f'{prefix}.conv.weight', [out, inp, kh, kw]]] + _bn(f'{prefix}.bn', out)


def _branches(prefix, inp, branches):
  """Branches as lists of (out, kernel) convs, or None for a pool (it takes an index too)."""
  out = []
  for b, steps in enumerate(branches):
    c = inp
    for k, step in enumerate(steps):
      if step is None:
        continue
      key = f'{prefix}.branch{b}' if len(steps) == 1 else f'{prefix}.branch{b}.{k}'
      out += _basic_conv(key, step[0], c, step[1])
      c = step[0]
  return out


def _inception_resnet_v2():
  out = []
  for name, o, i, k in (('conv2d_1a', 32, 3, 3), ('conv2d_2a', 32, 32, 3), ('conv2d_2b', 64, 32, 3),
                        ('conv2d_3b', 80, 64, 1), ('conv2d_4a', 192, 80, 3)):
    out += _basic_conv(name, o, i, k)
  out += _branches('mixed_5b', 192, [[(96, 1)], [(48, 1), (64, 5)], [(64, 1), (96, 3),
                                                                     (96, 3)], [None, (64, 1)]])
  block35 = [[(32, 1)], [(32, 1), (32, 3)], [(32, 1), (48, 3), (64, 3)]]
  block17 = [[(192, 1)], [(128, 1), (160, (1, 7)), (192, (7, 1))]]
  block8 = [[(192, 1)], [(192, 1), (224, (1, 3)), (256, (3, 1))]]

  def unit(prefix, channels, branches):
    mid = sum(steps[-1][0] for steps in branches)
    return _branches(prefix, channels, branches) + _conv(
        f'{prefix}.conv2d', channels, mid, 1) + [[f'{prefix}.conv2d.bias', [channels]]]

  for j in range(10):
    out += unit(f'repeat.{j}', 320, block35)
  out += _branches('mixed_6a', 320, [[(384, 3)], [(256, 1), (256, 3), (384, 3)], [None]])
  for j in range(20):
    out += unit(f'repeat_1.{j}', 1088, block17)
  out += _branches('mixed_7a', 1088,
                   [[(256, 1), (384, 3)], [(256, 1), (288, 3)], [(256, 1), (288, 3),
                                                                 (320, 3)], [None]])
  for j in range(9):
    out += unit(f'repeat_2.{j}', 2080, block8)
  out += unit('block8', 2080, block8) + _basic_conv('conv2d_7b', 1536, 2080, 1)
  return out + [['classif.weight', [NUM_CLASSES, 1536]], ['classif.bias', [NUM_CLASSES]]]


def layout(name):
  """[[key, [shape]], ...] of timm's `name` state dict, in timm's order."""
  arch = ARCHITECTURES[name]
  if arch['family'] == 'vgg':
    return _vgg16_bn()
  if arch['family'] == 'inception_resnet_v2':
    return _inception_resnet_v2()
  senet = arch['family'] == 'senet'
  stem = 'layer0.' if senet else ''
  if arch.get('deep_stem'):
    out = []
    for i, (o, i_) in enumerate(((64, 3), (64, 64), (128, 64)), start=1):
      out += _conv(f'layer0.conv{i}', o, i_, 3) + _bn(f'layer0.bn{i}', o)
    inplanes = 128
  else:
    out = _conv(f'{stem}conv1', 64, 3, 7) + _bn(f'{stem}bn1', 64)
    inplanes = 64
  for stage, units in enumerate(arch['stage_sizes']):
    planes = 64 * 2 ** stage
    for j in range(units):
      prefix = f'layer{stage + 1}.{j}'
      convs, width = _convs(arch, planes, inplanes)
      for i, (k, o, i_, g) in enumerate(convs, start=1):
        out += _conv(f'{prefix}.conv{i}', o, i_ // g, k) + _bn(f'{prefix}.bn{i}', o)
      if arch['se']:
        reduced = width // 16 if senet else _make_divisible8(width / 16)
        out += _se(f'{prefix}.se_module' if senet else f'{prefix}.se', width, reduced)
      if j == 0 and (stage > 0 or inplanes != width):
        k = arch.get('downsample_kernel', 1) if stage > 0 else 1
        out += _conv(f'{prefix}.downsample.0', width, inplanes, k) + _bn(
            f'{prefix}.downsample.1', width)
      inplanes = width
  head = 'last_linear' if senet else 'fc'
  return out + [[f'{head}.weight', [NUM_CLASSES, inplanes]], [f'{head}.bias', [NUM_CLASSES]]]
