"""The state-dict layout ([key, shape] in timm's order) of every full-size timm network we import.

Written from timm's constructors (`timm.models.resnet.ResNet`,
`timm.models.senet.SENet`), independently of the converter's plan, so that the
full-size parity fixtures need to store neither weights nor key lists:
make_fixtures.py checks `layout(name)` against the state dict of
`timm.create_model(name)`, and each fixture's digest covers the names and
shapes as well as the values.

Pure Python: the generator imports this file by path, the tests as
`tests.convert.timm_layouts`.
"""

import math

NUM_CLASSES = 1000
_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
           152: (3, 8, 36, 3)}


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
    'legacy_senet154': _senet(152, 'SEBottleneck', groups=64, deep_stem=True,
                              downsample_kernel=3),
}


def _bn(prefix, channels):
  return [[f'{prefix}.{leaf}', [channels]]
          for leaf in ('weight', 'bias', 'running_mean', 'running_var')] + [
              [f'{prefix}.num_batches_tracked', []]]


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


def layout(name):
  """[[key, [shape]], ...] of timm's `name` state dict, in timm's order."""
  arch = ARCHITECTURES[name]
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
        out += _conv(f'{prefix}.downsample.0', width, inplanes, k) + _bn(f'{prefix}.downsample.1',
                                                                         width)
      inplanes = width
  head = 'last_linear' if senet else 'fc'
  return out + [[f'{head}.weight', [NUM_CLASSES, inplanes]], [f'{head}.bias', [NUM_CLASSES]]]
