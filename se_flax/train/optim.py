"""The optimizer and learning-rate schedule, built from the config.

The paper's recipe (Sec. 6): SGD with momentum 0.9, weight decay 1e-4, a
learning rate of 0.6 for a batch of 1024 divided by 10 every 30 epochs. The
rate scales linearly with the batch (0.15 at 256), and the decay is coupled L2
(added to the gradient before momentum, as in Caffe/PyTorch SGD).

The "ResNet strikes back" recipes (Wightman et al. 2021) use AdamW
(Loshchilov & Hutter 2019) or LAMB (You et al. 2020) instead. Their decay is
decoupled, as in PyTorch's AdamW and timm's LAMB: `lr * weight_decay * w` is
subtracted from the weights beside the adaptive step, never passed through the
moment estimates, so the same `weight_decay` number means a different thing
than SGD's (RSB uses 0.01-0.02 with LAMB, not 1e-4).

Gradient clipping (`optimizer.grad_clip_norm`) rescales the raw gradients to
that global norm before anything else sees them, decay included. timm's LAMB
does the same inside the optimizer, to a norm of 1.0, which is why the RSB
recipes set it (docs/recipes.md).

`timm_cosine` is the cosine schedule as timm's CosineLRScheduler ran the RSB
recipes: the rate changes once per epoch, warms up linearly from
`schedule.warmup_lr`, follows the cosine from epoch 0 (warm-up included) to a
floor of `schedule.min_lr`, and stays at the floor for the last
`schedule.cooldown_epochs`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from se_flax.errors import check_choice
from se_flax.errors import check_range
from se_flax.errors import ConfigError

Schedule = Callable[[Any], jax.Array]

SCHEDULES = ('step', 'cosine', 'timm_cosine')
OPTIMIZERS = ('sgd', 'adamw', 'lamb')
# How the rate moves from lr_reference_batch to batch_size: in proportion (Goyal et al. 2017,
# for SGD) or with the square root (timm's rule for Adam-type optimizers and LAMB).
LR_SCALINGS = ('linear', 'sqrt')


def base_learning_rate(config: ml_collections.ConfigDict) -> float:
  """`config.learning_rate` moved from `lr_reference_batch` to `batch_size` by `lr_scaling`."""
  if config.get('lr_scaling', 'linear') == 'sqrt':
    return config.learning_rate * math.sqrt(config.batch_size / config.lr_reference_batch)
  return config.learning_rate * config.batch_size / config.lr_reference_batch


def check_config(config: ml_collections.ConfigDict, steps_per_epoch: Optional[int] = None,
                 total_steps: Optional[int] = None) -> None:
  """Raises ConfigError for an optimizer, schedule or learning-rate field that cannot work.

  With the step counts, also for a warm-up longer than the run.
  """
  check_range('learning_rate', config.learning_rate, low=0, low_open=True)
  check_range('lr_reference_batch', config.lr_reference_batch, integer=True, low=1,
              high=2 ** 31 - 1, hint='(the batch size learning_rate is given for)')
  check_choice('lr_scaling', config.get('lr_scaling', 'linear'), LR_SCALINGS)
  opt, sched = config.optimizer, config.schedule
  check_choice('optimizer.name', opt.name, OPTIMIZERS)
  check_range('optimizer.momentum', opt.momentum, low=0, high=1, high_open=True)
  check_range('optimizer.weight_decay', opt.weight_decay, low=0)
  _check_adaptive(opt)
  check_range('optimizer.grad_clip_norm', opt.grad_clip_norm, low=0, hint='(0 turns clipping off)')
  check_choice('schedule.name', sched.name, SCHEDULES)
  check_range('schedule.warmup_epochs', sched.warmup_epochs, low=0)
  _check_ends(sched)
  # The step decay's fields are checked under every schedule, as the cosine fields are: a
  # value that cannot work stays wrong when only schedule.name changes.
  check_range('schedule.step_factor', sched.step_factor, low=0, low_open=True, high=1)
  boundaries = tuple(sched.get('boundaries_epochs') or ())
  if boundaries and (any(
      isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b < float('inf')
      for b in boundaries) or list(boundaries) != sorted(set(boundaries))):
    raise ConfigError(f'config.schedule.boundaries_epochs={boundaries} must be positive and '
                      'strictly increasing')
  check_range('schedule.step_epochs', sched.step_epochs, low=0, low_open=True)
  if steps_per_epoch is not None or total_steps is not None:
    _check_steps(sched, steps_per_epoch, total_steps)


def _check_ends(sched):
  """warmup_lr, min_lr and cooldown_epochs: where the rate starts and ends.

  Every warm-up starts from warmup_lr; min_lr and cooldown_epochs shape the
  cosine schedules and a step decay ignores them, so a recipe's cosine
  settings may stay when only schedule.name changes.
  """
  for field in ('warmup_lr', 'min_lr', 'cooldown_epochs'):
    check_range(f'schedule.{field}', sched.get(field, 0.0), low=0)


def _check_adaptive(opt):
  """b1, b2 and eps, read by adamw and lamb.

  momentum and nesterov are sgd's alone; adamw and lamb ignore them (b1 is
  their momentum), so a config file's sgd settings may stay when only
  optimizer.name changes.
  """
  for field in ('b1', 'b2'):
    check_range(f'optimizer.{field}', opt[field], low=0, high=1, high_open=True)
  check_range('optimizer.eps', opt.eps, low=0, low_open=True)


def _check_steps(sched, steps_per_epoch, total_steps):
  if steps_per_epoch is None or steps_per_epoch <= 0:
    raise ConfigError(f'steps_per_epoch={steps_per_epoch} must be > 0')
  if total_steps is None or total_steps <= 0:
    raise ConfigError(f'total_steps={total_steps} must be > 0 '
                      '(config.num_epochs / config.num_train_steps)')
  epochs = total_steps / steps_per_epoch
  if round(sched.warmup_epochs * steps_per_epoch) > total_steps:
    raise ConfigError(f'config.schedule.warmup_epochs={sched.warmup_epochs} is longer than the run '
                      f'({total_steps} steps = {epochs:g} epochs); allowed: 0 to {epochs:g}')
  cooldown = sched.get('cooldown_epochs', 0.0)
  if sched.name != 'step' and cooldown and round(cooldown * steps_per_epoch) >= total_steps:
    raise ConfigError(
        f'config.schedule.cooldown_epochs={cooldown} leaves no cosine in a run of {epochs:g} '
        'epochs; allowed: 0 up to less than the run')


def create_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
                    total_steps: int) -> Schedule:
  """The learning rate as a function of the number of updates already applied.

  Warm-up is linear, `base * (s + 1) / warmup_steps` for `s < warmup_steps`, so
  the first update already moves the weights and the rate reaches `base` on the
  last warm-up step. `step`: `base * step_factor ** floor(s / step_len)` with
  `step_len = round(step_epochs * steps_per_epoch)` counted from step 0 (the epochs
  where the decay happens do not move with the warm-up), or, when
  `schedule.boundaries_epochs` is given, `base * step_factor ** k` after the
  k-th boundary. `cosine`: a half cosine from `base` right after warm-up to
  `schedule.min_lr` (0 by default) `schedule.cooldown_epochs` before the end,
  then that floor. With `schedule.warmup_lr` either warm-up starts from that
  rate instead of 0. `timm_cosine`: see `timm_cosine_schedule`.
  """
  check_config(config, steps_per_epoch, total_steps)
  sched = config.schedule
  base = base_learning_rate(config)
  if sched.name == 'timm_cosine':
    return timm_cosine_schedule(base, sched, steps_per_epoch, total_steps)
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
    end = total_steps - round(sched.get('cooldown_epochs', 0.0) * steps_per_epoch)
    cosine_steps = max(1, end - warmup_steps)
    # The floor as a share of base: with min_lr 0 the expression is the plain cosine, bit for bit.
    floor = sched.get('min_lr', 0.0) / base

    def decay(step):
      progress = jnp.clip((step - warmup_steps) / cosine_steps, 0.0, 1.0)
      return floor + (1.0 - floor) * (0.5 * (1.0 + jnp.cos(math.pi * progress)))

  warmup_lr = sched.get('warmup_lr', 0.0)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    rate = base * warmup(step) * decay(step)
    if warmup_lr:
      rate = jnp.where(step < warmup_steps,
                       warmup_lr + (base * decay(step) - warmup_lr) * warmup(step), rate)
    return rate.astype(jnp.float32)

  return schedule


def timm_cosine_schedule(base: float, sched: ml_collections.ConfigDict, steps_per_epoch: int,
                         total_steps: int) -> Schedule:
  """timm's CosineLRScheduler as the RSB recipes ran it: one rate per epoch.

  With t the epoch of the update (`floor(s / steps_per_epoch)`), W the warm-up
  epochs and T = the run's epochs less `cooldown_epochs`:
  `warmup_lr + t * (base - warmup_lr) / W` for t < W, then
  `min_lr + (base - min_lr) * (1 + cos(pi * t / T)) / 2` for t < T (the cosine
  counts from epoch 0, warm-up included: timm's warmup_prefix=False), then
  `min_lr`. train.py steps the scheduler after each epoch, so an epoch trains
  at the rate of its first update.
  """
  warmup_epochs = sched.warmup_epochs
  warmup_lr, min_lr = sched.get('warmup_lr', 0.0), sched.get('min_lr', 0.0)
  cosine_epochs = total_steps / steps_per_epoch - sched.get('cooldown_epochs', 0.0)

  def schedule(step):
    epoch = jnp.floor_divide(jnp.asarray(step, jnp.float32), steps_per_epoch)
    warm = warmup_lr + epoch * ((base - warmup_lr) / max(warmup_epochs, 1e-12))
    cosine = min_lr + 0.5 * (base - min_lr) * (1.0 + jnp.cos(math.pi * epoch / cosine_epochs))
    rate = jnp.where(epoch < cosine_epochs, cosine, min_lr)
    return jnp.where(epoch < warmup_epochs, warm, rate).astype(jnp.float32)

  return schedule


def weight_decay_mask(params: Any) -> Any:
  """True for parameters that get weight decay: all but the 1-D ones (BN scale/bias, biases)."""
  return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def create_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                     total_steps: int) -> tuple[optax.GradientTransformation, Schedule]:
  """The configured optimizer (sgd, adamw or lamb), clipping and schedule.

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
  mask = None if opt.decay_bn_and_bias else weight_decay_mask
  parts = []
  if opt.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.name == 'sgd':
    parts += _sgd(opt, schedule, mask)
  elif opt.name == 'adamw':
    parts.append(
        optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                    mask=mask))
  else:
    parts.append(_lamb(opt, schedule, mask))
  return optax.chain(*parts), schedule


def _sgd(opt, schedule, mask):
  parts = []
  if opt.weight_decay > 0:
    # Before momentum: the paper's SGD adds wd * w to the gradient.
    parts.append(optax.add_decayed_weights(opt.weight_decay, mask=mask))
  parts.append(optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
  return parts


def _lamb(opt, schedule, mask):
  """optax.lamb, except that the trust ratio scales only the parameters that decay.

  timm's LAMB (the RSB recipes) adapts only the parameter groups with weight
  decay, so with `decay_bn_and_bias=False` the 1-D parameters take the plain
  Adam step. With every parameter decaying this is `optax.lamb` exactly.
  """
  trust = optax.scale_by_trust_ratio()
  if mask is not None:
    trust = optax.masked(trust, mask)
  return optax.chain(optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps),
                     optax.add_decayed_weights(opt.weight_decay, mask=mask), trust,
                     optax.scale_by_learning_rate(schedule))
