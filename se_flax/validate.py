"""Checks a whole config before anything compiles or touches data.

Each error names the config field, the value given and what is allowed, so a
typo in a sweep costs seconds, not a queued job.
"""

import json

import jax
import jax.numpy as jnp

from se_flax.layers.se import SESpec
from se_flax.models import registry

NAN_POLICIES = ('stop', 'skip')
SCHEDULES = ('step', 'cosine')
OPTIMIZERS = ('sgd',)
DTYPES = ('float32', 'bfloat16', 'float16')
# Class count and input channels per data set: enough to check a model
# against its input before any data is read (or TensorFlow imported).
DATASET_SHAPES = {'imagenet2012': (1000, 3), 'cifar10': (10, 3), 'cifar100': (100, 3),
                  'digits': (10, 1)}
# Model fields that may differ between a checkpoint and the run resuming it:
# they change the arithmetic, the start or the BN averaging, not the network.
RESUMABLE_MODEL_FIELDS = ('model.dtype', 'model.zero_init_residual', 'model.bn_momentum')


class ConfigError(ValueError):
  """A config value that cannot work; the message says which field and what is allowed."""


def _positive_int(config, field):
  value = config
  for part in field.split('.'):
    value = value[part]
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ConfigError(f'config.{field}={value!r} must be a positive integer')
  return value


def se_spec(config):
  """The SE spec of the configured model, or None for a plain backbone."""
  if not registry.has_se(config.model.name):
    return None
  return SESpec.from_config(config.model.se)


def model_overrides(config):
  m = config.model
  overrides = dict(dtype=m.dtype, bn_momentum=m.bn_momentum, bn_epsilon=m.bn_epsilon,
                   bn_group_size=config.bn_group_size, zero_init_residual=m.zero_init_residual)
  if m.get('stride_in_1x1') is not None:
    overrides['stride_in_1x1'] = m.stride_in_1x1
  return overrides


def build_model(config, num_classes):
  """The configured model; raises ConfigError for options the backbone does not take.

  With `config.init_from` (imported weights), the architecture comes from the
  weights' model.json (layout, SE spec, depth), so weights never load into a
  network of another layout; the config still sets dtype and BN behaviour.
  """
  try:
    if config.get('init_from'):
      return _pretrained_model(config, num_classes)
    return registry.create_model(config.model.name, num_classes, se=se_spec(config),
                                 **model_overrides(config))
  except ValueError as e:
    raise ConfigError(str(e)) from e


def _pretrained_model(config, num_classes):
  from se_flax.convert import writer  # pylint: disable=g-import-not-at-top
  meta = writer.read_meta(config.init_from)
  if meta['model'] != config.model.name:
    raise ConfigError(f'config.model.name={config.model.name!r}, but config.init_from='
                      f'{config.init_from!r} holds {meta["model"]!r} weights; set '
                      f'config.model.name={meta["model"]!r}')
  arch = dict(meta.get('overrides', {}))
  se = arch.pop('se', None)
  if isinstance(arch.get('stage_sizes'), list):
    arch['stage_sizes'] = tuple(arch['stage_sizes'])
  for key in ('dtype', 'bn_momentum', 'bn_group_size'):
    arch[key] = model_overrides(config)[key]
  return registry.create_model(meta['model'], num_classes, se=se, **arch)


def validate(config, num_devices=None, num_processes=None, image_shape=None, num_classes=None):
  """Raises ConfigError on the first value that cannot work.

  `image_shape`/`num_classes` (from the data set's info) enable the check that
  the model accepts the input (e.g. a gather extent that fits every stage).
  """
  num_devices = num_devices or jax.device_count()
  num_processes = num_processes or jax.process_count()

  if config.model.name not in registry.PRESETS:
    raise ConfigError(f'config.model.name={config.model.name!r} is unknown; '
                      f'known models: {registry.list_models()}')
  if config.model.dtype not in DTYPES:
    raise ConfigError(f'config.model.dtype={config.model.dtype!r} is not allowed; choose one of {list(DTYPES)}')
  try:
    se_spec(config)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  if not 0.0 <= config.model.bn_momentum < 1.0:
    raise ConfigError(f'config.model.bn_momentum={config.model.bn_momentum} must be in [0, 1)')
  if config.model.bn_epsilon <= 0:
    raise ConfigError(f'config.model.bn_epsilon={config.model.bn_epsilon} must be positive')

  for field in ('batch_size', 'eval_batch_size'):
    value = _positive_int(config, field)
    if value % num_devices:
      raise ConfigError(
          f'config.{field}={value} is not divisible by the {num_devices} devices; the global batch is '
          f'split evenly across devices: use a multiple of {num_devices}')
    if value % num_processes:
      raise ConfigError(f'config.{field}={value} is not divisible by the {num_processes} processes')
  group = config.bn_group_size
  if not isinstance(group, int) or group < 0 or (group and config.batch_size % group):
    raise ConfigError(f'config.bn_group_size={group!r} must be 0 (whole-batch statistics) or a '
                      f'divisor of config.batch_size={config.batch_size}, e.g. the per-device batch '
                      f'{config.batch_size // num_devices}')

  if config.dataset.name not in DATASET_SHAPES:
    raise ConfigError(f'config.dataset.name={config.dataset.name!r} is not a known data set; '
                      f'known: {sorted(DATASET_SHAPES)}')
  for field in ('train_split', 'eval_split'):
    if not isinstance(config.dataset[field], str) or not config.dataset[field]:
      raise ConfigError(f'config.dataset.{field}={config.dataset[field]!r} must name a split, '
                        "e.g. 'train' or 'test[:50%]'")
  _positive_int(config, 'dataset.image_size')

  if config.num_train_steps <= 0 and not config.num_epochs > 0:
    raise ConfigError(f'config.num_epochs={config.num_epochs} must be positive '
                      f'(or set config.num_train_steps > 0)')
  if not config.learning_rate > 0:
    raise ConfigError(f'config.learning_rate={config.learning_rate} must be positive')
  if not config.lr_reference_batch > 0:
    raise ConfigError(f'config.lr_reference_batch={config.lr_reference_batch} must be positive')
  _check_optimizer(config)
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ConfigError(f'config.label_smoothing={config.label_smoothing} must be in [0, 1)')
  if config.nan_policy not in NAN_POLICIES:
    raise ConfigError(f'config.nan_policy={config.nan_policy!r} is not allowed; '
                      f'choose one of {list(NAN_POLICIES)}')
  for field in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    _positive_int(config, field)
  if config.eval_every_steps != -1 and config.eval_every_steps <= 0:
    raise ConfigError(f'config.eval_every_steps={config.eval_every_steps} must be positive, '
                      'or -1 for once per epoch')
  steps = tuple(config.profile_steps)
  if steps and (len(steps) != 2 or not 0 <= steps[0] < steps[1]):
    raise ConfigError(f'config.profile_steps={steps} must be () or (start, stop) with 0 <= start < stop')

  if image_shape is not None:
    _check_model_input(config, tuple(image_shape), num_classes or 10)


# Model/input pairs already traced: main.py checks before reading data, and the
# loop checks again with the data set's own facts; a deep model traces in seconds.
_CHECKED_INPUTS = set()


def _check_model_input(config, image_shape, num_classes):
  key = (json.dumps(config_as_json(config), sort_keys=True), image_shape, num_classes)
  if key in _CHECKED_INPUTS:
    return
  model = build_model(config, num_classes)
  x = jax.ShapeDtypeStruct((1,) + image_shape, jnp.float32)
  try:
    jax.eval_shape(lambda v: model.init(jax.random.PRNGKey(0), v, train=False), x)
  except ValueError as e:
    raise ConfigError(f'{e} (model {config.model.name} on {image_shape} inputs)') from e
  _CHECKED_INPUTS.add(key)


def _check_optimizer(config):
  opt, sched = config.optimizer, config.schedule
  if opt.name not in OPTIMIZERS:
    raise ConfigError(f'config.optimizer.name={opt.name!r} is not allowed; choose one of '
                      f'{list(OPTIMIZERS)}')
  if not 0.0 <= opt.momentum < 1.0:
    raise ConfigError(f'config.optimizer.momentum={opt.momentum} must be in [0, 1)')
  if not opt.weight_decay >= 0:
    raise ConfigError(f'config.optimizer.weight_decay={opt.weight_decay} must be >= 0')
  if sched.name not in SCHEDULES:
    raise ConfigError(f'config.schedule.name={sched.name!r} is not allowed; '
                      f'choose one of {list(SCHEDULES)}')
  if not sched.warmup_epochs >= 0:
    raise ConfigError(f'config.schedule.warmup_epochs={sched.warmup_epochs} must be >= 0')
  if sched.name == 'step':
    if not 0 < sched.step_factor <= 1:
      raise ConfigError(f'config.schedule.step_factor={sched.step_factor} must be in (0, 1]')
    boundaries = tuple(sched.get('boundaries_epochs') or ())
    if boundaries and (any(not b > 0 for b in boundaries)
                       or list(boundaries) != sorted(set(boundaries))):
      raise ConfigError(f'config.schedule.boundaries_epochs={boundaries} must be positive and '
                        'strictly increasing')
    if not boundaries and not sched.step_epochs > 0:
      raise ConfigError(f'config.schedule.step_epochs={sched.step_epochs} must be positive')


def expected_image_shape(config):
  """(H, W, C) the model will see, from the config alone; None for an unknown data set."""
  if config.dataset.name not in DATASET_SHAPES:
    return None
  return (config.dataset.image_size, config.dataset.image_size,
          DATASET_SHAPES[config.dataset.name][1])


def validate_before_data(config, num_devices=None, num_processes=None):
  """Every check that needs no data on disk, including the model on its input shape.

  Runs before TensorFlow is imported or a data set is opened, so a bad value
  costs the time to start Python, not the time to prepare data.
  """
  validate(config, num_devices=num_devices, num_processes=num_processes)
  validate(config, num_devices=num_devices, num_processes=num_processes,
           image_shape=expected_image_shape(config),
           num_classes=DATASET_SHAPES[config.dataset.name][0])


# ---------------------------------------------------------------- configs of checkpoints

def config_as_json(config):
  """The config as the checkpoint stores it: JSON types (tuples become lists)."""
  if hasattr(config, 'to_json_best_effort'):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(dict(config), default=str))


def _flatten(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(_flatten(value, path + '.'))
    else:
      out[path] = value
  return out


def config_differences(stored, current):
  """[(field, stored value, current value)] for every field that differs, sorted by field.

  A field present on one side only shows `<absent>` on the other.
  """
  absent = '<absent>'
  a, b = _flatten(stored), _flatten(config_as_json(current))
  return [(k, a.get(k, absent), b.get(k, absent))
          for k in sorted(set(a) | set(b)) if a.get(k, absent) != b.get(k, absent)]


def architecture_differences(differences, stored=None, current=None):
  """The `config_differences` that change the network the weights belong to.

  Those are the `model.*` fields but RESUMABLE_MODEL_FIELDS, and `model.se.*`
  only when either config names an SE model (a plain backbone ignores them).
  """
  names = [c['model']['name'] if isinstance(c, dict) else c.model.name
           for c in (stored, current) if c is not None]
  se_ignored = bool(names) and not any(n in registry.PRESETS and registry.has_se(n) for n in names)
  return [d for d in differences
          if d[0].startswith('model.') and d[0] not in RESUMABLE_MODEL_FIELDS
          and not (se_ignored and d[0].startswith('model.se.'))]


def format_differences(differences, limit=20):
  lines = [f'  config.{k}: {v_old!r} in the checkpoint, {v_new!r} now'
           for k, v_old, v_new in differences[:limit]]
  if len(differences) > limit:
    lines.append(f'  ... and {len(differences) - limit} more')
  return '\n'.join(lines)
