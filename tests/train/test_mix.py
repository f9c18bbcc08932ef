"""Mixup and CutMix of a batch, recomputed in numpy from the drawn weights and boxes."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import pytest

from se_flax.errors import ConfigError
from se_flax.train import mix

B, H, W, C, K = 6, 8, 10, 3, 5


def mix_cfg(mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, group_size=0):
  return ml_collections.ConfigDict(
      dict(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob, switch_prob=switch_prob,
           group_size=group_size))


def batch(seed=0, smoothing=0.1):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(B, H, W, C)).astype(np.float32)
  labels = rng.integers(0, K, size=B)
  targets = np.full((B, K), smoothing / K, np.float32)
  targets[np.arange(B), labels] += 1 - smoothing
  return images, targets


def mixed(cfg, seed, images, targets):
  key = jax.random.PRNGKey(seed)
  d = mix.draw(key, cfg, H, W)
  x, t = mix.mix_batch(key, jnp.asarray(images), jnp.asarray(targets), cfg)
  return d, np.asarray(x), np.asarray(t)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_mixup_blends_each_example_with_its_mirror(seed):
  images, targets = batch(seed)
  d, x, t = mixed(mix_cfg(mixup_alpha=0.8), seed, images, targets)
  assert bool(d.mixed) and not bool(d.cutmix)
  lam = np.float32(d.lam)
  assert 0.0 < lam < 1.0
  np.testing.assert_allclose(x, lam * images + (1 - lam) * images[::-1], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(t, lam * targets + (1 - lam) * targets[::-1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_cutmix_pastes_the_box_of_the_mirror(seed):
  images, targets = batch(seed)
  d, x, t = mixed(mix_cfg(cutmix_alpha=1.0), seed, images, targets)
  assert bool(d.mixed) and bool(d.cutmix)
  top, bottom, left, right = (int(v) for v in np.asarray(d.box))
  expected = images.copy()
  expected[:, top:bottom, left:right] = images[::-1, top:bottom, left:right]
  np.testing.assert_array_equal(x, expected)
  lam = 1 - (bottom - top) * (right - left) / (H * W)
  np.testing.assert_allclose(t, lam * targets + (1 - lam) * targets[::-1], rtol=1e-6, atol=1e-6)


def test_cutmix_box_area_is_the_corrected_weight():
  # Example i is the constant i + 1, so every pixel tells which image it came from.
  images = np.broadcast_to(
      np.arange(1, B + 1, dtype=np.float32)[:, None, None, None], (B, H, W, C)).copy()
  targets = np.eye(B, dtype=np.float32)
  boxes = 0
  for seed in range(12):
    _, x, t = mixed(mix_cfg(cutmix_alpha=1.0), seed, images, targets)
    from_pair = x[0, :, :, 0] == B  # example 0 is paired with example B - 1
    lam = 1 - from_pair.sum() / (H * W)
    assert t[0, 0] == pytest.approx(lam, abs=1e-6)
    assert t[0, B - 1] == pytest.approx(1 - lam, abs=1e-6)
    # The pasted pixels form one rectangle.
    rows, cols = from_pair.any(axis=1), from_pair.any(axis=0)
    np.testing.assert_array_equal(from_pair, np.outer(rows, cols))
    boxes += from_pair.any()
  assert boxes >= 8  # most draws paste a non-empty box


@pytest.mark.parametrize(
    'lam,cy,cx,box',
    [
        (0.75, 4, 5, (2, 6, 3, 7)),  # sides 0.5 * (8, 10) = (4, 5), half 2 each way
        (0.75, 0, 9, (0, 2, 7, 10)),  # clipped at the top and the right
        (0.0, 3, 2, (0, 7, 0, 7)),  # the whole image, half sides 4 and 5, clipped
        (1.0, 3, 2, (3, 3, 2, 2)),  # an empty box
    ])
def test_box_follows_timm_rand_bbox(lam, cy, cx, box):
  got = mix.cutmix_box(jnp.float32(lam), cy, cx, H, W)
  np.testing.assert_array_equal(np.asarray(got), box)


@pytest.mark.parametrize('switch_prob,cutmix', [(0.0, False), (1.0, True)])
def test_switch_prob_chooses_between_both(switch_prob, cutmix):
  cfg = mix_cfg(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=switch_prob)
  for seed in range(6):
    assert bool(mix.draw(jax.random.PRNGKey(seed), cfg, H, W).cutmix) == cutmix


@pytest.mark.parametrize('cfg', [
    mix_cfg(mixup_alpha=0.4),
    mix_cfg(cutmix_alpha=1.0),
    mix_cfg(mixup_alpha=0.2, cutmix_alpha=1.0)
])
def test_targets_still_sum_to_one(cfg):
  images, targets = batch(5)
  for seed in range(4):
    _, _, t = mixed(cfg, seed, images, targets)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=0, atol=1e-6)


def test_same_key_same_mix_other_key_other_mix():
  images, targets = batch(1)
  cfg = mix_cfg(mixup_alpha=0.2, cutmix_alpha=1.0)
  _, x1, t1 = mixed(cfg, 7, images, targets)
  _, x2, t2 = mixed(cfg, 7, images, targets)
  _, x3, _ = mixed(cfg, 8, images, targets)
  np.testing.assert_array_equal(x1, x2)
  np.testing.assert_array_equal(t1, t2)
  assert not np.array_equal(x1, x3)


@pytest.mark.parametrize('alpha', [0.2, 1.0])
def test_lam_follows_beta(alpha):
  keys = jax.random.split(jax.random.PRNGKey(42), 4000)
  lam = np.asarray(jax.vmap(lambda k: mix.draw(k, mix_cfg(mixup_alpha=alpha), H, W).lam)(keys))
  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); the variance tells the alphas apart.
  assert lam.mean() == pytest.approx(0.5, abs=0.03)
  assert lam.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.1)


def test_prob_zero_returns_the_inputs():
  images, targets = batch(2)
  x, t = mix.mix_batch(jax.random.PRNGKey(0), images, targets, mix_cfg(mixup_alpha=1.0, prob=0.0))
  np.testing.assert_array_equal(np.asarray(x), images)
  np.testing.assert_array_equal(np.asarray(t), targets)


def test_batches_not_drawn_for_mixing_come_back_unchanged():
  images, targets = batch(3)
  cfg = mix_cfg(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.5)
  untouched = 0
  for seed in range(16):
    key = jax.random.PRNGKey(seed)
    x, t = mix.mix_batch(key, images, targets, cfg)
    if not bool(mix.draw(key, cfg, H, W).mixed):
      np.testing.assert_array_equal(np.asarray(x), images)
      np.testing.assert_array_equal(np.asarray(t), targets)
      untouched += 1
  assert 3 <= untouched <= 13


def test_off_when_both_alphas_are_zero():
  assert not mix.enabled(mix_cfg())
  assert mix.enabled(mix_cfg(cutmix_alpha=1.0))
  images, targets = batch(4)
  x, t = mix.mix_batch(jax.random.PRNGKey(0), images, targets, mix_cfg())
  np.testing.assert_array_equal(np.asarray(x), images)
  np.testing.assert_array_equal(np.asarray(t), targets)


def test_sharded_batch_mixes_as_the_whole(mesh8):
  rng = np.random.default_rng(0)
  images = rng.normal(size=(16, H, W, C)).astype(np.float32)
  targets = np.eye(16, K, dtype=np.float32)
  cfg = mix_cfg(mixup_alpha=0.2, cutmix_alpha=1.0)
  key = jax.random.PRNGKey(3)
  sharding = NamedSharding(mesh8, P('data'))
  fn = jax.jit(lambda k, x, t: mix.mix_batch(k, x, t, cfg), in_shardings=(None, sharding, sharding),
               out_shardings=(sharding, sharding))
  x, t = fn(key, jax.device_put(images, sharding), jax.device_put(targets, sharding))
  x_ref, t_ref = mix.mix_batch(key, images, targets, cfg)
  np.testing.assert_allclose(np.asarray(x), np.asarray(x_ref), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(t), np.asarray(t_ref), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('field,value', [('mixup_alpha', -0.1), ('cutmix_alpha', -1.0),
                                         ('prob', 1.5), ('switch_prob', -0.1)])
def test_check_config_names_the_field(field, value):
  config = ml_collections.ConfigDict(dict(mix=mix_cfg()))
  mix.check_config(config)
  config.mix[field] = value
  with pytest.raises(ConfigError, match=rf'config\.mix\.{field}={value}'):
    mix.check_config(config)


def test_a_group_of_the_whole_batch_is_the_global_mix():
  images, targets = batch(7)
  whole = mix_cfg(mixup_alpha=0.4, cutmix_alpha=1.0)
  key = jax.random.PRNGKey(5)
  for group in (B, 2 * B):
    x, t = mix.mix_batch(key, images, targets,
                         mix_cfg(mixup_alpha=0.4, cutmix_alpha=1.0, group_size=group))
    x_ref, t_ref = mix.mix_batch(key, images, targets, whole)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(x_ref))
    np.testing.assert_array_equal(np.asarray(t), np.asarray(t_ref))


def test_each_group_mixes_on_its_own_with_its_own_draw(mesh8):
  # Groups of 4 over 8 devices of 2 examples each: every group spans two devices. Group g is
  # mixed as a batch of its own (paired within itself) by the draw of fold_in(key, g).
  rng = np.random.default_rng(1)
  images = rng.normal(size=(16, H, W, C)).astype(np.float32)
  targets = np.eye(16, K, dtype=np.float32)[np.arange(16) % K]
  cfg = mix_cfg(cutmix_alpha=1.0, group_size=4)
  sharding = NamedSharding(mesh8, P('data'))
  fn = jax.jit(lambda k, x, t: mix.mix_batch(k, x, t, cfg), in_shardings=(None, sharding, sharding),
               out_shardings=(sharding, sharding))
  key = jax.random.PRNGKey(2)
  x, t = (np.asarray(a)
          for a in fn(key, jax.device_put(images, sharding), jax.device_put(targets, sharding)))
  whole = mix_cfg(cutmix_alpha=1.0)
  for g in range(4):
    part = slice(4 * g, 4 * g + 4)
    x_g, t_g = mix.mix_batch(jax.random.fold_in(key, g), images[part], targets[part], whole)
    np.testing.assert_allclose(x[part], x_g, rtol=1e-6, atol=1e-6, err_msg=f'group {g}')
    np.testing.assert_allclose(t[part], t_g, rtol=1e-6, atol=1e-6, err_msg=f'group {g}')
  assert not np.allclose(t, targets)  # this key's draws do mix


@pytest.mark.parametrize('group,message', [
    (-1, 'config.mix.group_size=-1 must be an int >= 0'),
    (4, 'config.mix.group_size=4 must divide config.batch_size=6'),
])
def test_group_sizes_that_cannot_work_are_refused(group, message):
  config = ml_collections.ConfigDict(dict(mix=mix_cfg(group_size=3), batch_size=6))
  mix.check_config(config)
  config.mix.group_size = group
  with pytest.raises(ConfigError) as info:
    mix.check_config(config)
  assert message in str(info.value)
