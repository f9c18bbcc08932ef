"""Mixup and CutMix of a whole batch on the device, as timm's `Mixup` in 'batch' mode.

Mixup (Zhang et al. 2018) blends two images and their targets with a weight
lam ~ Beta(alpha, alpha); CutMix (Yun et al. 2019) pastes a box of one image
into the other and weighs the targets by the areas. "ResNet strikes back"
(Wightman et al. 2021) uses both, one draw per batch: with probability
`prob` the batch is mixed, by CutMix with probability `switch_prob` when both
alphas are positive, and every example is paired with the batch reversed
(timm's `x.flip(0)`).

Where images are paired: `mix.group_size` 0 mixes the global batch as one,
one draw and every example paired across it. timm mixes on each training
process, each GPU's own batch with its own draw; `group_size = k` does that
for every k consecutive examples of the global batch, each group with a draw
of its own (`fold_in(key, group)`), whatever the devices or processes
holding them, so a run mixes the same way on any hardware.

Every draw comes from the key alone (the step folds in its number), so a
resumed run mixes the same pairs with the same weights (docs/design.md,
"Determinism"). Everything is traced: under `jax.jit` the batch may be one
global array sharded over the 'data' mesh axis, and reversing it (or a
group) is a permutation that XLA inserts; nothing waits for the host.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from se_flax.errors import check_range
from se_flax.errors import ConfigError


def check_config(config) -> None:
  """Raises ConfigError for a config.mix field the mixing cannot take."""
  mix = config.mix
  for field in ('mixup_alpha', 'cutmix_alpha'):
    check_range(f'mix.{field}', mix[field], low=0, hint='(0 turns it off)')
  for field in ('prob', 'switch_prob'):
    check_range(f'mix.{field}', mix[field], low=0, high=1)
  group = check_range('mix.group_size', mix.get('group_size', 0), integer=True, low=0,
                      hint='(0: the whole batch)')
  if group and config.batch_size % group:
    raise ConfigError(f'config.mix.group_size={group} must divide config.batch_size='
                      f'{config.batch_size} (0: the whole batch)')


def enabled(mix_cfg) -> bool:
  """Whether config.mix asks for Mixup, CutMix or both."""
  return mix_cfg.mixup_alpha > 0 or mix_cfg.cutmix_alpha > 0


class Draw(NamedTuple):
  """The random choices for one batch (scalars).

  Attributes:
    mixed: whether the batch is mixed at all (probability `prob`).
    cutmix: CutMix rather than Mixup.
    lam: the Beta draw; for CutMix, the box's complement before clipping.
    box: (top, bottom, left, right), rows top..bottom-1 and columns
      left..right-1 come from the paired image (CutMix only).
  """
  mixed: jax.Array
  cutmix: jax.Array
  lam: jax.Array
  box: jax.Array


def draw(key: jax.Array, mix_cfg, height: int, width: int) -> Draw:
  """The random choices for a batch of `height` x `width` images under config.mix."""
  k_mixed, k_switch, k_mixup, k_cutmix, k_y, k_x = jax.random.split(key, 6)
  mixup_alpha, cutmix_alpha = float(mix_cfg.mixup_alpha), float(mix_cfg.cutmix_alpha)
  mixed = jax.random.bernoulli(k_mixed, float(mix_cfg.prob))
  if mixup_alpha > 0 and cutmix_alpha > 0:
    cutmix = jax.random.bernoulli(k_switch, float(mix_cfg.switch_prob))
  else:
    cutmix = jnp.asarray(cutmix_alpha > 0)
  # An alpha of 0 is never drawn from (Beta(0, 0) is degenerate); its draw is never selected.
  lam_mixup = _beta(k_mixup, mixup_alpha)
  lam_cutmix = _beta(k_cutmix, cutmix_alpha)
  lam = jnp.where(cutmix, lam_cutmix, lam_mixup)
  box = cutmix_box(lam, jax.random.randint(k_y, (), 0, height),
                   jax.random.randint(k_x, (), 0, width), height, width)
  return Draw(mixed, cutmix, lam, box)


def _beta(key, alpha):
  return jax.random.beta(key, alpha, alpha) if alpha > 0 else jnp.float32(1.0)


def cutmix_box(lam, cy, cx, height: int, width: int) -> jax.Array:
  """timm's `rand_bbox`: sides sqrt(1 - lam) times the image's, centred at (cy, cx), clipped."""
  ratio = jnp.sqrt(1.0 - lam)
  half_h = jnp.floor(height * ratio).astype(jnp.int32) // 2
  half_w = jnp.floor(width * ratio).astype(jnp.int32) // 2
  return jnp.stack([
      jnp.clip(cy - half_h, 0, height),
      jnp.clip(cy + half_h, 0, height),
      jnp.clip(cx - half_w, 0, width),
      jnp.clip(cx + half_w, 0, width)
  ])


def box_lam(box: jax.Array, height: int, width: int) -> jax.Array:
  """The share of the image outside the box: CutMix's weight once the box is clipped."""
  area = (box[1] - box[0]) * (box[3] - box[2])
  return 1.0 - area.astype(jnp.float32) / (height * width)


def apply(d: Draw, images: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mixes `images` (B,H,W,C) and `targets` (B,K) with the batch reversed, as `d` says."""
  height, width = images.shape[1:3]
  paired_images, paired_targets = images[::-1], targets[::-1]
  rows, cols = jnp.arange(height), jnp.arange(width)
  in_box = (((rows >= d.box[0]) & (rows < d.box[1]))[:, None] & ((cols >= d.box[2]) &
                                                                 (cols < d.box[3]))[None, :])
  lam = jnp.where(d.cutmix, box_lam(d.box, height, width), d.lam)
  lam_x = lam.astype(images.dtype)
  blended = lam_x * images + (1 - lam_x) * paired_images
  pasted = jnp.where(in_box[None, :, :, None], paired_images, images)
  mixed_images = jnp.where(d.cutmix, pasted, blended)
  lam_t = lam.astype(targets.dtype)
  mixed_targets = lam_t * targets + (1 - lam_t) * paired_targets
  # A batch left unmixed comes back bit for bit (a NaN in its pair cannot leak in).
  return (jnp.where(d.mixed, mixed_images, images), jnp.where(d.mixed, mixed_targets, targets))


def draw_groups(key: jax.Array, mix_cfg, groups: int, height: int, width: int) -> Draw:
  """One draw per group, `draw(fold_in(key, g))` for g < groups, stacked on a leading axis."""
  keys = jax.vmap(lambda g: jax.random.fold_in(key, g))(jnp.arange(groups))
  return jax.vmap(lambda k: draw(k, mix_cfg, height, width))(keys)


def apply_groups(d: Draw, images: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`apply` on each of the G = len(d.lam) equal groups of consecutive examples, group g by d[g].

  Each example is paired within its group, reversed: timm's batch mode on
  each process's own batch.
  """
  groups = d.lam.shape[0]
  split = lambda x: x.reshape((groups, x.shape[0] // groups) + x.shape[1:])
  mixed_images, mixed_targets = jax.vmap(apply)(d, split(images), split(targets))
  return mixed_images.reshape(images.shape), mixed_targets.reshape(targets.shape)


def mix_batch(key: jax.Array, images: jax.Array, targets: jax.Array,
              mix_cfg) -> tuple[jax.Array, jax.Array]:
  """Mixup or CutMix of the batch, or of each group, with itself reversed (timm's 'batch' mode).

  Args:
    key: a raw or typed PRNG key; the only source of randomness.
    images: float (B, H, W, C), normalised.
    targets: float (B, K), one-hot, possibly smoothed.
    mix_cfg: config.mix (mixup_alpha, cutmix_alpha, prob, switch_prob,
      group_size).

  Returns:
    The mixed images and targets, of the inputs' shapes and dtypes; the
    inputs themselves when mixing is off or this batch is not drawn for it.
  """
  if not enabled(mix_cfg) or mix_cfg.prob <= 0:
    return images, targets
  group = mix_cfg.get('group_size', 0)
  if not group or group >= images.shape[0]:
    return apply(draw(key, mix_cfg, *images.shape[1:3]), images, targets)
  groups = images.shape[0] // group
  return apply_groups(draw_groups(key, mix_cfg, groups, *images.shape[1:3]), images, targets)
