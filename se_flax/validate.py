"""Checks a whole config before anything compiles or touches data.

Each error names the config field, the value given and what is allowed, so a
typo in a sweep costs seconds, not a queued job.
"""

import jax
import jax.numpy as jnp

from se_flax.layers.se import SESpec
from se_flax.models import registry

NAN_POLICIES = ('stop', 'skip')
SCHEDULES = ('step', 'cosine')
DTYPES = ('float32', 'bfloat16', 'float16')


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

  if config.num_train_steps <= 0 and not config.num_epochs > 0:
    raise ConfigError(f'config.num_epochs={config.num_epochs} must be positive '
                      f'(or set config.num_train_steps > 0)')
  if not config.learning_rate > 0:
    raise ConfigError(f'config.learning_rate={config.learning_rate} must be positive')
  if config.schedule.name not in SCHEDULES:
    raise ConfigError(f'config.schedule.name={config.schedule.name!r} is not allowed; '
                      f'choose one of {list(SCHEDULES)}')
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ConfigError(f'config.label_smoothing={config.label_smoothing} must be in [0, 1)')
  if config.optimizer.weight_decay < 0:
    raise ConfigError(f'config.optimizer.weight_decay={config.optimizer.weight_decay} must be >= 0')
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
    model = build_model(config, num_classes or 10)
    x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
    try:
      jax.eval_shape(lambda v: model.init(jax.random.PRNGKey(0), v, train=False), x)
    except ValueError as e:
      raise ConfigError(f'{e} (model {config.model.name} on {tuple(image_shape)} inputs)') from e
