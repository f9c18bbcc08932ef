"""Model names -> constructors, and config.model -> the network.

Each plain backbone has an SE twin, named by `se_twin` (`plain_twin` goes back).

`create_model('se_resnet50', 1000, se=SESpec(reduction=8))` builds any preset;
overrides replace the preset's attributes and are checked by name.
`from_config(config, num_classes)` builds a run's network; it is the one place
where config.model's fields (and the layout of config.init_from's weights)
become model attributes, and where config.model.surgery puts SE blocks into a
plain preset (se_flax.surgery).
"""

import dataclasses
from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp

from se_flax import surgery
from se_flax.errors import check_choice
from se_flax.errors import check_range
from se_flax.errors import ConfigError
from se_flax.layers.se import SESpec
from se_flax.models import stored
from se_flax.models import zoo
from se_flax.models.cifar import CifarResNet
from se_flax.models.resnet import ResNet
from se_flax.surgery import places

# config.model.dtype -> the compute dtype.
# float16 is left out: its range overflows without loss scaling, which the step does not do.
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# Model fields that may differ between a checkpoint and the run resuming it:
# they change the arithmetic, the start, the BN averaging or the regularisation, not the network.
RESUMABLE_MODEL_FIELDS = ('model.dtype', 'model.zero_init_residual', 'model.bn_momentum',
                          'model.drop_path_rate')
# Attributes the config sets even on imported weights, whose layout is their own.
_RUN_ATTRIBUTES = ('dtype', 'bn_momentum')

_IMAGENET = {
    'resnet18':
        dict(stage_sizes=(2, 2, 2, 2), block='basic'),
    'resnet34':
        dict(stage_sizes=(3, 4, 6, 3), block='basic'),
    # The paper's ResNets are the Caffe models: stride on the first 1x1 conv (3.86 GFLOPs).
    'resnet50':
        dict(stage_sizes=(3, 4, 6, 3), block='bottleneck', stride_in_1x1=True),
    'resnet101':
        dict(stage_sizes=(3, 4, 23, 3), block='bottleneck', stride_in_1x1=True),
    'resnet152':
        dict(stage_sizes=(3, 8, 36, 3), block='bottleneck', stride_in_1x1=True),
    'resnext50_32x4d':
        dict(stage_sizes=(3, 4, 6, 3), block='bottleneck', groups=32, base_width=4),
    'resnext101_32x4d':
        dict(stage_sizes=(3, 4, 23, 3), block='bottleneck', groups=32, base_width=4),
    # Paper Appendix. `senet154` carries SE blocks; `senet154_plain` is the same network without.
    'senet154_plain':
        dict(stage_sizes=(3, 8, 36, 3), block='bottleneck', groups=64, base_width=4, stem='deep',
             stem_pool='ceil', first_width_factor=0.5, downsample_kernel=3, dropout=0.2),
}

_CIFAR = {
    'cifar_resnet20': dict(depth=20, kind='basic'),
    'cifar_resnet32': dict(depth=32, kind='basic'),
    'cifar_resnet44': dict(depth=44, kind='basic'),
    'cifar_resnet56': dict(depth=56, kind='basic'),
    'cifar_resnet110': dict(depth=110, kind='basic'),
    'preact_resnet164': dict(depth=164, kind='preact_bottleneck'),
    'wrn16_8': dict(depth=16, kind='wide', widen=8),
}


def se_twin(plain: str) -> str:
  """The name of plain preset `plain`'s SE twin: se_<plain>; senet154 for senet154_plain."""
  return 'senet154' if plain == 'senet154_plain' else f'se_{plain}'


def _presets():
  table = {}
  for family, cls in ((_IMAGENET, ResNet), (_CIFAR, CifarResNet)):
    for name, kwargs in family.items():
      table[name] = (cls, kwargs, False)
      table[se_twin(name)] = (cls, kwargs, True)
  table.update(zoo.PRESETS)  # the paper's other backbones (Tables 2, 3)
  return table


PRESETS = _presets()


def plain_twin(name: str) -> str:
  """The plain preset whose SE twin is `name` (`se_twin`'s inverse).

  Raises:
    ValueError: `name` is no SE preset.
  """
  for plain, (_, _, with_se) in PRESETS.items():
    if not with_se and se_twin(plain) == name:
      return plain
  raise ValueError(f'{name!r} has no plain twin in the registry')


def list_models():
  return sorted(PRESETS)


def has_se(name: str) -> bool:
  return _lookup(name)[2]


def _lookup(name):
  if name not in PRESETS:
    raise ValueError(f'config.model.name={name!r} is unknown; known models: {list_models()}')
  return PRESETS[name]


def create_model(name: str, num_classes: int, se: Optional[Union[SESpec, Mapping[str, Any]]] = None,
                 **overrides):
  """Builds preset `name` with `num_classes` outputs.

  Args:
    name: a name from `list_models()`.
    num_classes: classifier width.
    se: the SE spec for an SE preset (an `SESpec` or a mapping of its fields);
      defaults to `SESpec()`, the paper's block. Ignored by plain presets,
      whose twins differ only by the SE blocks.
    **overrides: attributes of the backbone class (dtype, bn_momentum,
      bn_epsilon, bn_group_size, zero_init_residual, stride_in_1x1, ...).
  """
  cls, kwargs, with_se = _lookup(name)
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f'num_classes={num_classes!r} must be a positive integer')
  fields = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name', 'num_classes', 'se'}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f'model options {unknown} do not apply to {name!r}; allowed: {sorted(fields)}')
  args = dict(kwargs)
  args.update({k: v for k, v in overrides.items() if v is not None})
  if isinstance(args.get('stage_sizes'), list):  # as model.json stores it
    args['stage_sizes'] = tuple(args['stage_sizes'])
  if 'dtype' in args:
    args['dtype'] = _dtype(args['dtype'])
  if with_se:
    args['se'] = se if isinstance(se, SESpec) else SESpec.from_config(se or {})
  return cls(num_classes=num_classes, **args)


def _dtype(value):
  if isinstance(value, str):
    if value == 'float16':
      raise ValueError("config.model.dtype='float16' is not supported: float16 overflows without "
                       "loss scaling, which se_flax does not do; use config.model.dtype='bfloat16' "
                       "(the same speed on GPUs and TPUs, float32's range) or 'float32'")
    check_choice('model.dtype', value, DTYPES)
    return DTYPES[value]
  return value


def from_config(config, num_classes: int):
  """The network a run trains: config.model's, in the layout of config.init_from's weights if set.

  The one way from a config to a network: the upfront check, the training set-up
  and the report all build their model here.

  Args:
    config: the run's config. Read: config.model (name, dtype, bn_momentum,
      bn_epsilon, zero_init_residual, stride_in_1x1 (None: the preset's),
      drop_path_rate (residual networks only), se (read for SE models only; a
      plain backbone ignores it)), config.bn_group_size, and config.init_from.
      With init_from set, the layout stored with the weights (model.json's
      'overrides', 'se' included) replaces the config's layout fields, so
      weights never load into a network of another layout; the config still
      sets dtype, bn_momentum, bn_group_size and drop_path_rate.
      config.model.surgery (where, min_channels, identity_start) with a
      non-empty `where` puts SE blocks of spec config.model.se into the plain
      preset (`with_surgery`).
    num_classes: classifier width.

  Raises:
    ConfigError: a value the model cannot take (the message names the field),
      an init_from directory that is not one, or weights of another model
      than config.model.name.
  """
  model_cfg = config.model
  try:
    architecture = _stored_layout(config)
    with_se = has_se(model_cfg.name)
    _check_bn(model_cfg)
    if architecture is not None:
      attrs = dict(architecture)
    else:
      attrs = dict(bn_epsilon=model_cfg.bn_epsilon, zero_init_residual=model_cfg.zero_init_residual)
      if model_cfg.get('stride_in_1x1') is not None:
        attrs['stride_in_1x1'] = model_cfg.stride_in_1x1
      if with_se:
        attrs['se'] = SESpec.from_config(model_cfg.se)
        _check_se(model_cfg.name, attrs['se'])
    attrs.update({k: model_cfg[k] for k in _RUN_ATTRIBUTES}, bn_group_size=config.bn_group_size)
    drop_path_rate = _check_drop_path(model_cfg)
    if drop_path_rate:
      attrs['drop_path_rate'] = drop_path_rate
    return with_surgery(config, create_model(model_cfg.name, num_classes, **attrs))
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(str(e)) from e


def surgery_of(config) -> Optional[Mapping[str, Any]]:
  """config.model.surgery where it puts SE blocks, else None (a config or its JSON)."""
  model_cfg = config['model'] if isinstance(config, dict) else config.model
  fields = model_cfg.get('surgery') or {}  # configs stored before the field have none
  if 'min_channels' in fields:
    # Checked when surgery is off too: a sweep that turns it on later must not find it broken.
    places.check_min_channels(fields['min_channels'])
  return fields if fields.get('where') else None


def with_surgery(config, model):
  """`model` with SE blocks where config.model.surgery says; `model` itself where it says none.

  The places are found once, here, on an input of config.dataset.image_size in
  evaluation mode (a plain preset's places do not depend on the input's
  channels or on the mode), so every later call uses the same ones.
  """
  fields = surgery_of(config)
  if fields is None:
    return model
  name = config.model.name
  if has_se(name):
    raise ConfigError(f'config.model.surgery.where={fields["where"]!r} puts SE blocks into a plain '
                      f'network; config.model.name={name!r} has its own: use '
                      f"config.model.name='{plain_twin(name)}'")
  size = config.dataset.image_size
  sample = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  made = surgery.add_se(model, SESpec.from_config(config.model.se), fields['where'],
                        min_channels=fields['min_channels'],
                        identity_start=fields['identity_start'], dtype=model.dtype, args=(sample,),
                        kwargs={'train': False})
  if not made.sites:
    # As stages=() for an se_ preset: an SE run without SE blocks would be the plain network.
    raise ConfigError(f'config.model.surgery.where={fields["where"]!r} with min_channels='
                      f'{fields["min_channels"]} puts no SE block into {name!r}; lower '
                      'min_channels or choose another rule')
  return made


def _stored_layout(config) -> Optional[Mapping[str, Any]]:
  """The layout saved with config.init_from's weights, or None for a fresh start."""
  if not config.get('init_from'):
    return None
  meta = stored.read_meta(config.init_from)
  if meta['model'] != config.model.name:
    raise ConfigError(f'config.model.name={config.model.name!r}, but config.init_from='
                      f'{config.init_from!r} holds {meta["model"]!r} weights; set '
                      f'config.model.name={meta["model"]!r}')
  return meta.get('overrides', {})


def _check_se(name, se):
  """The spec's placement rules that hold before the backbone is built, with the twin as advice.

  Of those, only an empty stages tuple can fail: it would make the SE model its
  plain twin under a name that says otherwise. The backbone checks the rest.
  """
  try:
    se.check_placement(repr(name))
  except ConfigError as e:
    raise ConfigError(
        f"{e}, or use the plain preset: config.model.name='{plain_twin(name)}'") from e


def _check_drop_path(model_cfg) -> float:
  """Stochastic depth drops residual branches: it needs a rate in [0, 1) and a residual network."""
  rate = model_cfg.get('drop_path_rate', 0.0)  # configs stored before the field have none
  if not 0.0 <= rate < 1.0:
    raise ConfigError(f'config.model.drop_path_rate={rate} must be in [0, 1)')
  if rate and not _accepts_drop_path(model_cfg.name):
    accepting = [n for n in list_models() if _accepts_drop_path(n)]
    raise ConfigError(f'config.model.drop_path_rate={rate} needs residual units, which '
                      f'{model_cfg.name!r} has none of; use 0, or one of {accepting}')
  return rate


def _accepts_drop_path(name):
  return 'drop_path_rate' in {f.name for f in dataclasses.fields(_lookup(name)[0])}


def _check_bn(model_cfg):
  check_range('model.bn_momentum', model_cfg.bn_momentum, low=0, high=1, high_open=True)
  check_range('model.bn_epsilon', model_cfg.bn_epsilon, low=0, low_open=True)


def architecture_differences(differences, stored=None, current=None):
  """The config differences (config_lib.differences) that change the network weights belong to.

  Those are the `model.*` fields but RESUMABLE_MODEL_FIELDS, and `model.se.*`
  only when either config names an SE model or puts SE blocks in by surgery (a
  plain backbone ignores them). `stored` and `current` are configs or their JSON.
  """
  configs = [c for c in (stored, current) if c is not None]
  names = [c['model']['name'] if isinstance(c, dict) else c.model.name for c in configs]
  se_ignored = (bool(names) and not any(n in PRESETS and has_se(n) for n in names)
                and not any(surgery_of(c) for c in configs))
  return [
      d for d in differences if d[0].startswith('model.') and d[0] not in RESUMABLE_MODEL_FIELDS
      and not (se_ignored and d[0].startswith('model.se.'))
  ]
