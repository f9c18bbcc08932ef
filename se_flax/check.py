"""The whole config, checked once per command before TensorFlow is imported or anything compiles.

This module owns the run-level fields: batch sizes and how they split over
devices, BN groups (which must not straddle devices), the run's length,
cadences, checkpoints kept, profiling. Every other field is checked by its
owner, which this module calls: the data set by `datasets.check_config`,
the split over processes by `shard.local_batch`, config.model by
`models.from_config` (the SE fields by `SESpec`), the optimizer and schedule
by `optim.check_config`, the loss, NaN policy, EMA and Mixup by
`step.check_config`, config.analysis by `gates.check_config`, and the
SE_FLAX_* environment variables by `check_environment`. Last, the model's
initialisation is traced (not compiled) on the data set's input, so that an
SE width or gather extent that does not fit a stage fails here too. Each
message names the field, the value given and what is allowed, so a typo in a
sweep costs seconds, not a queued job (docs/design.md).
"""

import contextlib

import jax
import jax.numpy as jnp

from se_flax import environment
from se_flax import models
from se_flax.analysis import gates
from se_flax.data import datasets
from se_flax.data import shard
from se_flax.errors import check_range
from se_flax.errors import ConfigError
from se_flax.models import summary
from se_flax.train import optim
from se_flax.train import step

# The step counter, the seed and every count derived from the config are
# int32 on the device; a value past this bound overflows there, not here.
MAX_INT32 = 2 ** 31 - 1


class ModelInputError(ConfigError):
  """A valid model that cannot take the data set's input: a stage too narrow or too small."""


def check_config(config, *, num_devices=None, num_processes=None) -> None:
  """Raises ConfigError on the first value that cannot work.

  `num_devices` and `num_processes` default to JAX's; the batch sizes must
  split evenly over both.
  """
  model = _checked_model(config, num_devices, num_processes)
  x = jax.ShapeDtypeStruct((1,) + input_shape(config), jnp.float32)
  with _input_errors(config):
    variables = jax.eval_shape(lambda v: model.init(jax.random.PRNGKey(0), v, train=False), x)
  eval_shape = input_shape(config, evaluation=True)
  if eval_shape != x.shape[1:]:
    # The weights trained at one resolution must also take the test resolution.
    with _input_errors(config, eval_shape):
      jax.eval_shape(lambda v, y: model.apply(v, y, train=False), variables,
                     jax.ShapeDtypeStruct((1,) + eval_shape, jnp.float32))


def check_environment(environ=None) -> None:
  """Raises ConfigError for an SE_FLAX_* environment variable se_flax cannot use."""
  environment.check(environ)


def input_shape(config, evaluation: bool = False) -> tuple:
  """(H, W, C) of the images the model sees in training, or in evaluation."""
  size = datasets.eval_image_size(config.dataset) if evaluation else config.dataset.image_size
  return datasets.get(config.dataset.name).input_shape(size)


def describe(config) -> str:
  """The --mode=summary text: per-stage parameters, MACs and output shapes, and the SE spec.

  Checks the config as `check_config` does on one device, tracing the model once.
  """
  model = _checked_model(config, 1, 1)
  with _input_errors(config):
    text = summary.summarize(model, input_shape(config), config.model.name).table()
  if getattr(model, 'se', None) is not None:
    text += f'\nSE: {model.se}'
  return text


def _checked_model(config, num_devices, num_processes):
  """The model, once every field has passed; its input is not tried yet."""
  check_environment()
  num_devices = num_devices or jax.device_count()
  num_processes = num_processes or jax.process_count()
  check_batches(config, num_devices, num_processes)
  spec = datasets.check_config(config.dataset)
  _check_run(config, spec)
  optim.check_config(config)
  step.check_config(config)
  gates.check_config(config.analysis, spec.num_classes, spec.name)
  return models.from_config(config, spec.num_classes)


@contextlib.contextmanager
def _input_errors(config, shape=None):
  """Turns the model's complaints about its input shape into ModelInputError."""
  try:
    yield
  except ValueError as e:
    shape = shape or input_shape(config)
    raise ModelInputError(f'{e} (model {config.model.name} on {shape} inputs)') from e


def _positive_int(config, field):
  value = config
  for part in field.split('.'):
    value = value[part]
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ConfigError(f'config.{field}={value!r} must be a positive integer')
  if value > MAX_INT32:
    raise ConfigError(f'config.{field}={value!r} must be a positive integer <= {MAX_INT32}')
  return value


def check_batches(config, num_devices: int, num_processes: int) -> None:
  """The global batch sizes split evenly over devices and processes, and BN groups fit them."""
  for field in ('batch_size', 'eval_batch_size'):
    value = _positive_int(config, field)
    if value % num_devices:
      raise ConfigError(
          f'config.{field}={value} is not divisible by the {num_devices} devices; the global batch is '
          f'split evenly across devices: use a multiple of {num_devices}')
    shard.local_batch(value, num_processes, f'config.{field}')
  _check_bn_groups(config.bn_group_size, config.batch_size, num_devices)


def bn_group_sizes(batch_size: int, num_devices: int) -> list:
  """The allowed config.bn_group_size values besides 0: the divisors of the per-device
  batch (groups within a device) and its multiples that divide the batch (groups of whole
  devices), so that no group's statistics need examples gathered from another device."""
  per_device = batch_size // num_devices
  within = [g for g in range(1, per_device + 1) if per_device % g == 0]
  spanning = [g for g in range(2 * per_device, batch_size + 1, per_device) if batch_size % g == 0]
  return within + spanning


def _check_bn_groups(group, batch_size, num_devices):
  allowed = bn_group_sizes(batch_size, num_devices)
  if not isinstance(group, int) or isinstance(group, bool) or (group and group not in allowed):
    raise ConfigError(f'config.bn_group_size={group!r} must be 0 (whole-batch statistics) or a '
                      f'divisor of config.batch_size={batch_size} that divides the per-device '
                      f'batch {batch_size // num_devices} or is a multiple of it; allowed: '
                      f'{[0] + allowed}')


def _check_run(config, spec):
  """The run's length, cadences, checkpoints kept, seed and profiling window."""
  check_range('seed', config.seed, integer=True, low=0, high=2 ** 32 - 1)
  check_range('num_train_steps', config.num_train_steps, integer=True, low=1, high=MAX_INT32,
              allowed=(-1, 0), hint='(-1 or 0: config.num_epochs sets the length)')
  if config.num_train_steps <= 0:
    epochs = check_range('num_epochs', config.num_epochs, low=0, low_open=True,
                         hint='(or set config.num_train_steps > 0)')
    # The length in steps is derived from the epochs; it must fit the step counter.
    per_epoch = max(1, spec.num_train // config.batch_size)
    if epochs * per_epoch > MAX_INT32:
      raise ConfigError(f'config.num_epochs={epochs} is {epochs * per_epoch:.3g} steps of '
                        f'{config.batch_size} images on {spec.name}; at most {MAX_INT32} '
                        'steps fit the step counter')
  for field in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    _positive_int(config, field)
  check_range('eval_every_steps', config.eval_every_steps, integer=True, low=1, high=MAX_INT32,
              allowed=(-1,), hint='(-1 for once per epoch)')
  steps = tuple(config.profile_steps)
  if steps and (len(steps) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
                or not 0 <= steps[0] < steps[1] <= MAX_INT32):
    raise ConfigError(f'config.profile_steps={steps} must be () or (start, stop) with integers '
                      '0 <= start < stop')
