"""timm model names -> our presets, the overrides that reproduce their layout, and tensor names.

Four timm families are covered, each with its own module names:

- `timm.models.resnet.ResNet` (resnet*, resnext*, seresnet*, seresnext*):
  torchvision names (`conv1`, `layer1.0.conv1`, `layer1.0.downsample.0`,
  `fc`); SE as `layer1.0.se.fc1/fc2` (1x1 convs with bias), reduced width
  rounded to a multiple of 8; stride on the 3x3 conv; 3x3/2 max-pool padded 1.
- `timm.models.senet.SENet` (legacy_*): ports of the official Caffe models
  (Cadene's pretrainedmodels). Stem under `layer0.`, SE as `se_module`,
  classifier `last_linear`; reduced width C // 16; ceil-mode max-pool without
  padding; dropout 0.2 before the classifier; stride on the first 1x1 conv in
  SE-ResNet bottlenecks but on the 3x3 in SE-ResNeXt and SENet-154 ones.
- `timm.models.vgg.VGG` (vgg16_bn): `features.{i}` numbers convs, BNs, ReLUs
  and max-pools alike; the classifier is a `ConvMlp` whose fc1 is a 7x7 conv
  on the 7x7 pooled map (our Dense on the flattened (H, W, C) map, so its
  kernel is permuted from (C, H, W)), fc2 a 1x1 conv, then `head.fc`.
- `timm.models.inception_resnet_v2.InceptionResnetV2`: a one-step branch is
  the BasicConv2d itself (`branch0.conv`), a longer one a Sequential whose
  pools take indices too (`branch3.1.conv`); residual units `repeat`,
  `repeat_1`, `repeat_2` and the last Block8 `block8`; BN epsilon 1e-3.

Parameter counts of every entry equal timm's (tests/convert/test_mapping.py).
"""

import dataclasses
import re
import types
from typing import Any, Mapping, Optional

from se_flax.convert.mapping import BN
from se_flax.convert.mapping import CONV
from se_flax.convert.mapping import CONV1X1_DENSE
from se_flax.convert.mapping import CONV7X7_DENSE
from se_flax.convert.mapping import CONV_BIAS
from se_flax.convert.mapping import LINEAR
from se_flax.convert.mapping import Rule
from se_flax.layers.se import SESpec
from se_flax.models import inception
from se_flax.models import vgg

_UNIT = r'layer(\d+)_(\d+)'  # our unit `layer{i}_{j}` <-> PyTorch `layer{i}.{j}`

RESNET_RULES = (
    Rule('conv1', 'conv1', CONV),
    Rule('bn1', 'bn1', BN),
    Rule(_UNIT + r'/(conv\d)', r'layer\1.\2.\3', CONV),
    Rule(_UNIT + r'/(bn\d)', r'layer\1.\2.\3', BN),
    Rule(_UNIT + r'/se/(fc[12])', r'layer\1.\2.se.\3', CONV1X1_DENSE),
    Rule(_UNIT + r'/downsample_conv', r'layer\1.\2.downsample.0', CONV),
    Rule(_UNIT + r'/downsample_bn', r'layer\1.\2.downsample.1', BN),
    Rule('fc', 'fc', LINEAR),
)

SENET_RULES = (
    Rule('conv1', 'layer0.conv1', CONV),
    Rule('bn1', 'layer0.bn1', BN),
    Rule(r'stem_conv([123])', r'layer0.conv\1', CONV),  # SENet-154's three 3x3 stem convs
    Rule(r'stem_bn([123])', r'layer0.bn\1', BN),
    Rule(_UNIT + r'/(conv\d)', r'layer\1.\2.\3', CONV),
    Rule(_UNIT + r'/(bn\d)', r'layer\1.\2.\3', BN),
    Rule(_UNIT + r'/se/(fc[12])', r'layer\1.\2.se_module.\3', CONV1X1_DENSE),
    Rule(_UNIT + r'/downsample_conv', r'layer\1.\2.downsample.0', CONV),
    Rule(_UNIT + r'/downsample_bn', r'layer\1.\2.downsample.1', BN),
    Rule('fc', 'last_linear', LINEAR),
)


def _vgg_rules(widths):
  # features.{i}: conv, BN, ReLU per conv, one max-pool per stage.
  rules, index = [], 0
  for s, stage in enumerate(widths):
    for j in range(len(stage)):
      rules += [
          Rule(f'layer{s + 1}_{j}/conv', f'features.{index}', CONV_BIAS),
          Rule(f'layer{s + 1}_{j}/bn', f'features.{index + 1}', BN)
      ]
      index += 3
    index += 1
  return tuple(rules) + (Rule('fc1', 'pre_logits.fc1',
                              CONV7X7_DENSE), Rule('fc2', 'pre_logits.fc2',
                                                   CONV1X1_DENSE), Rule('fc', 'head.fc', LINEAR))


VGG_RULES = _vgg_rules(vgg.VGG16_WIDTHS)


def _irv2_source(module: str) -> str:
  """timm's name for our module `module`; the last Block8 (scale 1, no ReLU) is `block8`."""
  unit = re.fullmatch(r'layer(\d)_(\d+)', module)
  if not unit:
    return module
  stage, j = int(unit.group(1)), int(unit.group(2))
  units = inception.InceptionResNetV2.units
  if (stage, j) == (len(units), units[-1] - 1):
    return 'block8'
  return f'{("repeat", "repeat_1", "repeat_2")[stage - 1]}.{j}'


def _irv2_rules():
  """One rule per module of timm's inception_resnet_v2 (its 10 / 20 / 10 units are fixed)."""
  rules = []
  for name in ('conv2d_1a', 'conv2d_2a', 'conv2d_2b', 'conv2d_3b', 'conv2d_4a', 'conv2d_7b'):
    rules += [Rule(f'{name}/conv', f'{name}.conv', CONV), Rule(f'{name}/bn', f'{name}.bn', BN)]
  modules = [('mixed_5b', inception.MIXED_5B), ('mixed_6a', inception.MIXED_6A),
             ('mixed_7a', inception.MIXED_7A)]
  for stage, (branches, _) in enumerate(inception.IRV2_UNITS, start=1):
    modules += [
        (f'layer{stage}_{j}', branches) for j in range(inception.InceptionResNetV2.units[stage - 1])
    ]
  for module, branches in modules:
    source = _irv2_source(module)
    for b, branch in enumerate(branches):
      for k, step in enumerate(branch):
        if not isinstance(step, inception.Conv):
          continue
        # A one-step branch is the BasicConv2d itself, a longer one a Sequential.
        src = f'{source}.branch{b}' if len(branch) == 1 else f'{source}.branch{b}.{k}'
        rules += [
            Rule(f'{module}/branch{b}_{k}/conv', f'{src}.conv', CONV),
            Rule(f'{module}/branch{b}_{k}/bn', f'{src}.bn', BN)
        ]
    if module.startswith('layer'):
      rules.append(Rule(f'{module}/conv', f'{source}.conv2d', CONV_BIAS))
  return tuple(rules) + (Rule('fc', 'classif', LINEAR),)


IRV2_RULES = _irv2_rules()

FAMILIES = {
    'resnet': RESNET_RULES,
    'senet': SENET_RULES,
    'vgg': VGG_RULES,
    'inception_resnet_v2': IRV2_RULES,
}
HEADS = {
    'resnet': 'fc.weight',
    'senet': 'last_linear.weight',
    'vgg': 'head.fc.weight',
    'inception_resnet_v2': 'classif.weight'
}


@dataclasses.dataclass(frozen=True)
class TimmModel:
  """How one timm model maps onto ours.

  Attributes:
    preset: our registry name.
    family: key of FAMILIES: which timm class, hence which tensor names.
    overrides: model attributes that reproduce timm's layout.
    se: the SE spec (None for plain networks).
  """
  preset: str
  family: str
  overrides: Mapping[str, Any]
  se: Optional[SESpec] = None

  def __post_init__(self):
    # Entries share their override dicts; a read-only view keeps one entry's edit from leaking.
    object.__setattr__(self, 'overrides', types.MappingProxyType(dict(self.overrides)))

  def model_overrides(self) -> dict:
    """The overrides as written to model.json, SE spec fields included."""
    out = dict(self.overrides)
    if self.se is not None:
      out['se'] = dataclasses.asdict(self.se)
    return out


# PyTorch's BatchNorm2d epsilon; written out so that the import does not depend on our default.
_COMMON = {'bn_epsilon': 1e-5}
_TIMM = {**_COMMON, 'stem_pool': 'pad1'}
_TIMM_BOTTLENECK = {**_TIMM, 'stride_in_1x1': False}  # torchvision "v1.5"
# timm's SENet class: ceil-mode pooling for the Caffe weights, drop_rate=0.2 by default.
_CAFFE = {**_COMMON, 'stem_pool': 'ceil', 'dropout': 0.2}
_TIMM_SE = SESpec(rounding='multiple8')
_CAFFE_SE = SESpec(rounding='floor')

# timm's SEResNetBlock (the Caffe port of SE-ResNet-18/34) applies a ReLU after bn2, before SE.
_CAFFE_BASIC = {**_CAFFE, 'basic_act_before_se': True}

TIMM_MODELS = {
    'resnet18':
        TimmModel('resnet18', 'resnet', _TIMM),
    'resnet34':
        TimmModel('resnet34', 'resnet', _TIMM),
    'resnet50':
        TimmModel('resnet50', 'resnet', _TIMM_BOTTLENECK),
    'resnet101':
        TimmModel('resnet101', 'resnet', _TIMM_BOTTLENECK),
    'resnet152':
        TimmModel('resnet152', 'resnet', _TIMM_BOTTLENECK),
    'resnext50_32x4d':
        TimmModel('resnext50_32x4d', 'resnet', _TIMM_BOTTLENECK),
    'resnext101_32x4d':
        TimmModel('resnext101_32x4d', 'resnet', _TIMM_BOTTLENECK),
    'seresnet18':
        TimmModel('se_resnet18', 'resnet', _TIMM, _TIMM_SE),
    'seresnet34':
        TimmModel('se_resnet34', 'resnet', _TIMM, _TIMM_SE),
    'seresnet50':
        TimmModel('se_resnet50', 'resnet', _TIMM_BOTTLENECK, _TIMM_SE),
    'seresnet101':
        TimmModel('se_resnet101', 'resnet', _TIMM_BOTTLENECK, _TIMM_SE),
    'seresnet152':
        TimmModel('se_resnet152', 'resnet', _TIMM_BOTTLENECK, _TIMM_SE),
    'seresnext50_32x4d':
        TimmModel('se_resnext50_32x4d', 'resnet', _TIMM_BOTTLENECK, _TIMM_SE),
    'seresnext101_32x4d':
        TimmModel('se_resnext101_32x4d', 'resnet', _TIMM_BOTTLENECK, _TIMM_SE),
    'legacy_seresnet18':
        TimmModel('se_resnet18', 'senet', _CAFFE_BASIC, _CAFFE_SE),
    'legacy_seresnet34':
        TimmModel('se_resnet34', 'senet', _CAFFE_BASIC, _CAFFE_SE),
    # SEResNetBottleneck: the Caffe layout, stride on the first 1x1 conv (paper Table 2 GFLOPs).
    'legacy_seresnet50':
        TimmModel('se_resnet50', 'senet', {
            **_CAFFE, 'stride_in_1x1': True
        }, _CAFFE_SE),
    'legacy_seresnet101':
        TimmModel('se_resnet101', 'senet', {
            **_CAFFE, 'stride_in_1x1': True
        }, _CAFFE_SE),
    'legacy_seresnet152':
        TimmModel('se_resnet152', 'senet', {
            **_CAFFE, 'stride_in_1x1': True
        }, _CAFFE_SE),
    # SEResNeXtBottleneck and SEBottleneck put the stride on the grouped 3x3 conv.
    'legacy_seresnext50_32x4d':
        TimmModel('se_resnext50_32x4d', 'senet', {
            **_CAFFE, 'stride_in_1x1': False
        }, _CAFFE_SE),
    'legacy_seresnext101_32x4d':
        TimmModel('se_resnext101_32x4d', 'senet', {
            **_CAFFE, 'stride_in_1x1': False
        }, _CAFFE_SE),
    # Deep stem, ceil pool, halved first 1x1, 3x3 projections and dropout 0.2 are the preset's own.
    'legacy_senet154':
        TimmModel('senet154', 'senet', {
            **_CAFFE, 'stride_in_1x1': False
        }, _CAFFE_SE),
    'vgg16_bn':
        TimmModel('vgg16_bn', 'vgg', _COMMON),
    # TensorFlow's BN epsilon, stored so that config.model.bn_epsilon (1e-5) cannot replace it.
    'inception_resnet_v2':
        TimmModel('inception_resnet_v2', 'inception_resnet_v2', {'bn_epsilon': 1e-3}),
}


def _default_timm_names():
  # A preset's default source is timm's own re-trained model where one exists, else the Caffe port.
  names = {}
  for name, entry in sorted(TIMM_MODELS.items(), key=lambda kv: kv[0].startswith('legacy_')):
    names.setdefault(entry.preset, name)
  return names


DEFAULT_TIMM_NAME = _default_timm_names()


def resolve(model: Optional[str], timm_name: Optional[str]):
  """(our preset, timm name) from either or both; errors name the flag and the allowed values."""
  if timm_name is None:
    if model is None:
      raise ValueError('give --timm_name (or --model, which picks its default timm source); '
                       f'timm names: {sorted(TIMM_MODELS)}')
    if model not in DEFAULT_TIMM_NAME:
      raise ValueError(f'--model={model!r} has no timm source; models with one: '
                       f'{sorted(DEFAULT_TIMM_NAME)}')
    timm_name = DEFAULT_TIMM_NAME[model]
  if timm_name not in TIMM_MODELS:
    raise ValueError(
        f'--timm_name={timm_name!r} is not supported; choose one of {sorted(TIMM_MODELS)}')
  preset = TIMM_MODELS[timm_name].preset
  if model is not None and model != preset:
    raise ValueError(f'--model={model!r} does not match --timm_name={timm_name!r}, whose layout is '
                     f'our {preset!r}; drop --model or pass --model={preset}')
  return preset, timm_name


def family_hint(state_dict, family: str) -> str:
  """A line for a MappingError when the keys look like the other timm family's."""
  looks_senet = 'layer0.conv1.weight' in state_dict or 'last_linear.weight' in state_dict
  if family == 'resnet' and looks_senet:
    return ('hint: the keys (layer0.*, last_linear) are those of timm\'s SENet class: '
            'pass a legacy_* --timm_name, e.g. legacy_seresnet50')
  if family == 'senet' and not looks_senet and 'conv1.weight' in state_dict:
    return ('hint: the keys (conv1, fc) are those of timm\'s ResNet class: pass a non-legacy '
            '--timm_name, e.g. seresnet50')
  return ''
