"""train_step and eval_step: pure functions of (state, batch), and their jitted forms.

Metrics come back as sums and counts, never means, so the host can add them
over steps and over a padded evaluation set and get exact totals
(`se_flax.train.metrics.MetricAccumulator` turns them into rates).

Training images arrive as uint8 pixels, a quarter of float32's bytes over the
host-to-device link; `model_input` normalises them inside the jitted step,
with the data set's mean and std (se_flax/data/datasets.py) as constants.
Float images are taken as already normalised (evaluation batches).

BatchNorm needs nothing here to be synchronised: under `jax.jit` the batch is
one global array sharded over `data`, so the mean over its batch axis is the
global batch's mean and XLA inserts the cross-device reduction. Per-group
statistics (`config.bn_group_size`) are the model's business.

The targets are (B, K) float rows: one-hot, label-smoothed, then (with
`config.mix`) mixed by Mixup/CutMix after normalisation. The loss is softmax
cross-entropy or, as in "ResNet strikes back" (Wightman et al. 2021), a
per-class sigmoid BCE (`config.loss='bce'`). Train top-1/top-5 are always
counted against the original labels.

With `config.ema.decay > 0` every applied update also moves the weights'
exponential moving average (`TrainState.update_ema`); the NaN guard keeps or
replaces it together with the params.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import ml_collections
import optax

from se_flax.data import datasets
from se_flax.errors import check_choice
from se_flax.errors import check_range
from se_flax.train import mix
from se_flax.train import parallel
from se_flax.train.state import TrainState

NAN_POLICIES = ('stop', 'skip')
LOSSES = ('softmax', 'bce')
EMA_SELECT_BEST = ('ema', 'raw')
Metrics = dict[str, jax.Array]


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a train-step field that cannot work.

  The fields: nan_policy, label_smoothing, loss, bce_target_threshold,
  ema.decay, ema.select_best, and config.mix (through `mix.check_config`).
  """
  _check_nan_policy(config.nan_policy)
  check_range('label_smoothing', config.label_smoothing, low=0, high=1, high_open=True)
  _check_loss(config.loss)
  check_range('bce_target_threshold', config.bce_target_threshold, low=0, high=1, high_open=True,
              hint='(0 keeps the soft targets)')
  check_range('ema.decay', config.ema.decay, low=0, high=1, high_open=True,
              hint='(0 turns the EMA off)')
  check_choice('ema.select_best', config.ema.select_best, EMA_SELECT_BEST)
  mix.check_config(config)


def _check_loss(loss):
  check_choice('loss', loss, LOSSES)


def _check_nan_policy(nan_policy):
  check_choice('nan_policy', nan_policy, NAN_POLICIES)


def one_hot_targets(labels: jax.Array, num_classes: int, label_smoothing: float = 0.0) -> jax.Array:
  """(B, K) float32 targets: one-hot, label-smoothed.

  The smoothed target puts `1 - label_smoothing + label_smoothing / K` on the
  label and `label_smoothing / K` on every other class (Szegedy et al. 2016).
  """
  return optax.smooth_labels(jax.nn.one_hot(labels, num_classes, dtype=jnp.float32),
                             label_smoothing)


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy in float32, with label smoothing."""
  return softmax_loss(logits, one_hot_targets(labels, num_classes, label_smoothing))


def softmax_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy against (B, K) target rows, in float32."""
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def bce_loss(logits: jax.Array, targets: jax.Array, target_threshold: float = 0.0) -> jax.Array:
  """Per-example sigmoid binary cross-entropy, the mean over the K classes, in float32.

  timm's `BinaryCrossEntropy` as "ResNet strikes back" uses it: every class
  is an independent sigmoid against its (smoothed, possibly mixed) target, and
  with `target_threshold > 0` the targets become `target > threshold` (RSB:
  0.2, so a class mixed in at a weight above 0.2 counts as present).
  """
  if target_threshold > 0:
    targets = (targets > target_threshold).astype(jnp.float32)
  return optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets).mean(axis=-1)


def per_example_loss(logits: jax.Array, targets: jax.Array, loss: str = 'softmax',
                     bce_target_threshold: float = 0.0) -> jax.Array:
  """`config.loss` of `logits` against (B, K) targets, one value per example."""
  _check_loss(loss)
  if loss == 'bce':
    return bce_loss(logits, targets, bce_target_threshold)
  return softmax_loss(logits, targets)


def topk_correct(logits: jax.Array, labels: jax.Array,
                 num_classes: int) -> tuple[jax.Array, jax.Array]:
  """Per-example 1.0/0.0 for top-1 and top-5 hits.

  With fewer than five classes the top-5 set holds every class, so every
  example is a top-5 hit and the top-5 error is exactly 0.

  Computed from the label's rank (the classes ahead of it, ties going to the
  lower index as in `argmax` and `lax.top_k`), a per-example reduction: a
  `top_k` over a batch sharded on `data` is gathered whole onto every device
  by some backends (CPU), an all-gather of the logits each step.
  """
  logits = logits.astype(jnp.float32)
  label_logit = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=-1)
  classes = jnp.arange(logits.shape[-1])
  ahead = (logits > label_logit) | ((logits == label_logit) & (classes < labels[:, None]))
  rank = ahead.sum(axis=-1)
  top1 = (rank == 0).astype(jnp.float32)
  top5 = (rank < min(5, num_classes)).astype(jnp.float32)
  return top1, top5


def model_input(images: jax.Array, mean=None, std=None) -> jax.Array:
  """The model's input: integer pixels normalised as (x - mean) / std in float32.

  The same float32 arithmetic as the host normalisation it replaces
  (se_flax.data.augment.normalize), so the values agree to float rounding.
  Float images are returned as they are: they are already normalised.
  """
  if jnp.issubdtype(images.dtype, jnp.floating) or mean is None:
    return images
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def _updates_applied(state: TrainState) -> jax.Array:
  """The optimizer's own update count, which drives its schedule.

  It equals `state.step` except after `skip`ped steps, which advance the step
  but keep the old opt_state; reporting the rate from it reports the rate used.
  """
  # Several counters (adam's moments, a schedule's) all count the same applied updates.
  counts = optax.tree_utils.tree_get_all_with_path(state.opt_state, 'count')
  return counts[0][1] if counts else state.step


def _all_finite(tree: Any) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.array(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def train_step(state: TrainState, batch: Mapping[str, jax.Array], *, apply_fn: Callable[..., Any],
               schedule_fn: Callable[[Any], jax.Array], num_classes: int,
               label_smoothing: float = 0.0, nan_policy: str = 'stop', mean=None, std=None,
               loss: str = 'softmax', bce_target_threshold: float = 0.0, mix_cfg=None,
               ema_decay: float = 0.0) -> tuple[TrainState, Metrics]:
  """One optimizer update on `batch` (`image`, `label`).

  Args:
    state: the current state.
    batch: global arrays; `image` (B, H, W, C) uint8 pixels or normalised
      floats (see `model_input`), `label` int (B,).
    apply_fn: the model's `apply`.
    schedule_fn: step -> learning rate, only to report the rate in use.
    num_classes: K, for one-hot targets and top-5.
    label_smoothing: epsilon of label smoothing.
    mean, std: per-channel pixel statistics (0..255) for uint8 images.
    loss: a name in LOSSES; `bce_target_threshold` binarises bce's targets.
    mix_cfg: config.mix; when `mix.enabled(mix_cfg)`, the normalised batch and
      its targets are mixed with a key of their own, `fold_in(fold_in(rng, 1),
      step)`, so the dropout key of every step stays what it was without it.
      The whole global batch is paired at once, or with `mix_cfg.group_size`
      each group of that many consecutive examples on its own (timm mixes
      each process's batch).
    ema_decay: the EMA's decay, used when the state holds an EMA.
    nan_policy: what a non-finite loss or gradient does. `stop`: the state
      comes back unchanged (step not advanced) with `finite == 0` and the
      caller stops. `skip`: params, batch_stats, opt_state and EMA stay, the step
      advances, and `skipped == 1`; that step's loss and error sums are zeroed
      so the running means stay finite. The schedule counts applied updates,
      so each skipped step delays it by one.

  Returns:
    `(new_state, metrics)`; metrics are float32 scalars: `loss_sum`,
    `top1_correct`, `top5_correct`, `count` (examples), `grad_norm_sum` (of
    the raw gradients, before any clipping), `steps` (1), `learning_rate`,
    `finite` (1/0), `skipped` (1/0).
  """
  _check_nan_policy(nan_policy)
  images, labels = model_input(batch['image'], mean, std), batch['label']
  targets = one_hot_targets(labels, num_classes, label_smoothing)
  if mix_cfg is not None and mix.enabled(mix_cfg):
    mix_rng = jax.random.fold_in(jax.random.fold_in(state.rng, 1), state.step)
    images, targets = mix.mix_batch(mix_rng, images, targets, mix_cfg)
  dropout_rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    logits, new_model_state = apply_fn({
        'params': params,
        'batch_stats': state.batch_stats
    }, images, train=True, mutable=['batch_stats'], rngs={'dropout': dropout_rng})
    per_example = per_example_loss(logits, targets, loss, bce_target_threshold)
    return per_example.mean(), (logits, new_model_state, per_example)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (mean_loss, (logits, new_model_state, per_example)), grads = grad_fn(state.params)
  grad_norm = optax.global_norm(grads)
  new_state = state.apply_gradients(
      grads=grads, batch_stats=new_model_state.get('batch_stats', state.batch_stats))
  new_state = new_state.update_ema(ema_decay)
  # The statistics can overflow even when the loss did not (a huge activation).
  # An update can overflow the parameters even from finite gradients (a huge learning rate).
  # The EMA is a convex combination of finite weights, so it needs no test of its own.
  finite = (jnp.isfinite(mean_loss) & jnp.isfinite(grad_norm) & _all_finite(new_state.batch_stats) &
            _all_finite(new_state.params))

  if nan_policy == 'stop':
    keep = state
  else:
    keep = state.replace(step=state.step + 1)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, keep)

  top1, top5 = topk_correct(logits, labels, num_classes)
  metrics = {
      'loss_sum': per_example.sum(),
      'top1_correct': top1.sum(),
      'top5_correct': top5.sum(),
      'count': jnp.asarray(labels.shape[0], jnp.float32),
      'grad_norm_sum': grad_norm,
      'steps': jnp.ones((), jnp.float32),
  }
  if nan_policy == 'skip':
    metrics = {k: jnp.where(finite, v, 0.0) for k, v in metrics.items()}
    metrics['skipped'] = 1.0 - finite.astype(jnp.float32)
  else:
    metrics['skipped'] = jnp.zeros((), jnp.float32)
  metrics['learning_rate'] = schedule_fn(_updates_applied(state))
  metrics['finite'] = finite.astype(jnp.float32)
  return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def eval_step(state: TrainState, batch: Mapping[str, jax.Array], *, apply_fn: Callable[..., Any],
              num_classes: int) -> Metrics:
  """Sums over the real (mask == 1) examples of `batch` (`image`, `label`, `mask`).

  Returns:
    `loss_sum` (unsmoothed cross-entropy), `top1_correct`, `top5_correct` and
    `count` = sum of the mask, so totals over a padded split equal the
    split's own counts.
  """
  logits = apply_fn({
      'params': state.params,
      'batch_stats': state.batch_stats
  }, batch['image'], train=False)
  labels = batch['label']
  mask = batch['mask'].astype(jnp.float32) if 'mask' in batch else jnp.ones(
      labels.shape, jnp.float32)
  loss = cross_entropy(logits, labels, num_classes)
  top1, top5 = topk_correct(logits, labels, num_classes)
  # where(), not a product: padded rows may hold anything, even NaN.
  real = mask > 0
  return {
      'loss_sum': jnp.where(real, loss, 0.0).sum(),
      'top1_correct': jnp.where(real, top1, 0.0).sum(),
      'top5_correct': jnp.where(real, top5, 0.0).sum(),
      'count': mask.sum(),
  }


def make_train_step(model: Any, config: ml_collections.ConfigDict, mesh: Mesh,
                    schedule_fn: Callable[[Any], jax.Array], num_classes: int):
  """`train_step` jitted for `mesh`: state replicated and donated, batch split over `data`.

  Returns:
    `step(state, batch) -> (state, metrics)`; the input state's buffers are
    donated, so the caller must use the returned state.

  Raises:
    ConfigError: see `check_config`.
  """
  check_config(config)
  spec = datasets.get(config.dataset.name)
  fn = functools.partial(train_step, apply_fn=model.apply, schedule_fn=schedule_fn,
                         num_classes=num_classes, label_smoothing=config.label_smoothing,
                         nan_policy=config.nan_policy, mean=spec.mean, std=spec.std,
                         loss=config.loss, bce_target_threshold=config.bce_target_threshold,
                         mix_cfg=config.mix, ema_decay=config.ema.decay)
  rep = parallel.replicated(mesh)
  return jax.jit(fn, in_shardings=(rep, parallel.batch_sharding(mesh)), out_shardings=(rep, rep),
                 donate_argnums=0)


def make_eval_step(model: Any, mesh: Mesh, num_classes: int):
  """`eval_step` jitted for `mesh`: `step(state, batch) -> metrics` (state not donated)."""
  fn = functools.partial(eval_step, apply_fn=model.apply, num_classes=num_classes)
  rep = parallel.replicated(mesh)
  return jax.jit(fn, in_shardings=(rep, parallel.batch_sharding(mesh)), out_shardings=rep)
