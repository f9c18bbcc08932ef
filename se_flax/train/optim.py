"""The optimizer and learning-rate schedule, built from the config.

The paper's recipe (Sec. 6): SGD with momentum 0.9, weight decay 1e-4, a
learning rate of 0.6 for a batch of 1024 divided by 10 every 30 epochs. The
rate scales linearly with the batch (0.15 at 256), and the decay is coupled L2
(added to the gradient before momentum, as in Caffe/PyTorch SGD), not AdamW's
decoupled decay.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from se_flax.errors import ConfigError

Schedule = Callable[[Any], jax.Array]

SCHEDULES = ('step', 'cosine')
OPTIMIZERS = ('sgd',)


def base_learning_rate(config: ml_collections.ConfigDict) -> float:
  """`config.learning_rate` scaled linearly from `lr_reference_batch` to `batch_size`."""
  return config.learning_rate * config.batch_size / config.lr_reference_batch


def check_config(config: ml_collections.ConfigDict, steps_per_epoch: Optional[int] = None,
                 total_steps: Optional[int] = None) -> None:
  """Raises ConfigError for an optimizer, schedule or learning-rate field that cannot work.

  With the step counts, also for a warm-up longer than the run.
  """
  if not config.learning_rate > 0:
    raise ConfigError(f'config.learning_rate={config.learning_rate} must be positive')
  if not config.lr_reference_batch > 0:
    raise ConfigError(f'config.lr_reference_batch={config.lr_reference_batch} must be positive')
  opt, sched = config.optimizer, config.schedule
  _allowed('optimizer.name', opt.name, OPTIMIZERS)
  if not 0.0 <= opt.momentum < 1.0:
    raise ConfigError(f'config.optimizer.momentum={opt.momentum} must be in [0, 1)')
  if not opt.weight_decay >= 0:
    raise ConfigError(f'config.optimizer.weight_decay={opt.weight_decay} must be >= 0')
  _allowed('schedule.name', sched.name, SCHEDULES)
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
  if steps_per_epoch is not None or total_steps is not None:
    _check_steps(sched, steps_per_epoch, total_steps)


def _allowed(field, value, allowed):
  if value not in allowed:
    raise ConfigError(f'config.{field}={value!r} is not allowed; choose one of {list(allowed)}')


def _check_steps(sched, steps_per_epoch, total_steps):
  if steps_per_epoch is None or steps_per_epoch <= 0:
    raise ConfigError(f'steps_per_epoch={steps_per_epoch} must be > 0')
  if total_steps is None or total_steps <= 0:
    raise ConfigError(f'total_steps={total_steps} must be > 0 '
                      '(config.num_epochs / config.num_train_steps)')
  epochs = total_steps / steps_per_epoch
  if round(sched.warmup_epochs * steps_per_epoch) > total_steps:
    raise ConfigError(
        f'config.schedule.warmup_epochs={sched.warmup_epochs} is longer than the run '
        f'({total_steps} steps = {epochs:g} epochs); allowed: 0 to {epochs:g}')


def create_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
                    total_steps: int) -> Schedule:
  """The learning rate as a function of the number of updates already applied.

  Warm-up is linear, `base * (s + 1) / warmup_steps` for `s < warmup_steps`, so
  the first update already moves the weights and the rate reaches `base` on the
  last warm-up step. `step`: `base * step_factor ** floor(s / step_len)` with
  `step_len = round(step_epochs * steps_per_epoch)` counted from step 0 (the epochs
  where the decay happens do not move with the warm-up), or, when
  `schedule.boundaries_epochs` is given, `base * step_factor ** k` after the
  k-th boundary. `cosine`: a half cosine from `base` right after warm-up to 0
  at `total_steps`.
  """
  check_config(config, steps_per_epoch, total_steps)
  sched = config.schedule
  base = base_learning_rate(config)
  warmup_steps = round(sched.warmup_epochs * steps_per_epoch)

  def warmup(step):
    if warmup_steps == 0:
      return jnp.ones_like(step, jnp.float32)
    return jnp.minimum(1.0, (step + 1.0) / warmup_steps)

  boundaries = tuple(sched.get('boundaries_epochs') or ())
  if sched.name == 'step' and boundaries:
    # Whole steps, so a boundary is exact even when steps_per_epoch is odd.
    boundary_steps = jnp.array([round(b * steps_per_epoch) for b in boundaries], jnp.float32)

    def decay(step):
      return sched.step_factor ** jnp.sum(step >= boundary_steps)
  elif sched.name == 'step':
    step_len = max(1, round(sched.step_epochs * steps_per_epoch))

    def decay(step):
      return sched.step_factor ** jnp.floor_divide(step, step_len)
  else:
    cosine_steps = max(1, total_steps - warmup_steps)

    def decay(step):
      progress = jnp.clip((step - warmup_steps) / cosine_steps, 0.0, 1.0)
      return 0.5 * (1.0 + jnp.cos(math.pi * progress))

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    return (base * warmup(step) * decay(step)).astype(jnp.float32)

  return schedule


def weight_decay_mask(params: Any) -> Any:
  """True for parameters that get weight decay: all but the 1-D ones (BN scale/bias, biases)."""
  return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def create_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                     total_steps: int) -> tuple[optax.GradientTransformation, Schedule]:
  """SGD with momentum, coupled L2 weight decay and the configured schedule.

  Args:
    config: the run config (`optimizer.*`, `learning_rate`, `lr_reference_batch`,
      `batch_size`, `schedule.*`).
    steps_per_epoch: updates per epoch at `config.batch_size`.
    total_steps: updates in the whole run.

  Returns:
    `(tx, schedule)`; `schedule(step)` is the rate used by update number `step`.

  Raises:
    ConfigError: see `check_config`.
  """
  schedule = create_schedule(config, steps_per_epoch, total_steps)
  opt = config.optimizer
  parts = []
  if opt.weight_decay > 0:
    mask = None if opt.decay_bn_and_bias else weight_decay_mask
    # Before momentum: the paper's SGD adds wd * w to the gradient.
    parts.append(optax.add_decayed_weights(opt.weight_decay, mask=mask))
  parts.append(optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
  return optax.chain(*parts), schedule
