"""The RSB recipes' random-size crop against timm's RandomResizedCrop, draw for draw in distribution.

The fixture holds 3,000 windows of timm's sampler (Python's `random`) on two
images; ours come from stateless TF draws, so the windows are compared as
samples: a two-sample Kolmogorov-Smirnov test on the area fraction, the log
aspect ratio and the position of the drawn windows, and the share of draws
that fall back to timm's centre crop. The 'tf' sampler (tf.image's
bounding-box sampler, the paper recipe's) draws smaller crops and fails the
same test.
"""

import functools

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from configs import imagenet
from se_flax.data import augment
from tests.recipes import timm_fixtures

META = timm_fixtures.meta('crop')
SHAPES = [tuple(s) for s in META['shapes']]
# timm's window when all ten draws fail: the 375x500 image is within the aspect range (4/3), so
# the whole of it; the 60x400 strip is not, so its centre 60x80 (aspect 4/3).
FALLBACKS = {(375, 500): [0, 0, 375, 500], (60, 400): [0, 160, 60, 80]}
# Fixed seeds on both sides make every p-value a constant; 1e-3 leaves room for the next
# fixture's draws while the old sampler's p-values are below 1e-20.
P_MIN = 1e-3


@functools.lru_cache(maxsize=None)
def our_windows(shape, sampler, count=META['draws']):
  """`count` windows of `sampler` on an image of `shape`, with the RSB recipe's crop fields."""
  dataset = imagenet.get_config('recipe=rsb_a1').dataset
  image_shape = tf.constant([*shape, 3])
  seeds = tf.stack([tf.range(count, dtype=tf.int64),
                    tf.fill([count], tf.constant(9, tf.int64))], axis=1)
  draw = tf.function(lambda: tf.map_fn(
      lambda seed: augment.sample_crop_window(
          image_shape, seed, sampler=sampler, area_range=tuple(dataset.crop_area_range),
          fallback_fraction=dataset.image_size / dataset.eval_resize), seeds, fn_output_signature=tf
      .int32))
  return draw().numpy().astype(np.int64)


def statistics(windows, shape):
  """Area fraction, log aspect (width / height) and the left offset's share of its range."""
  height, width = shape
  top, left, h, w = (windows[:, i].astype(np.float64) for i in range(4))
  room = np.maximum(width - w, 1)
  return {
      'area': h * w / (height * width),
      'log_aspect': np.log(w / h),
      'left': left / room,
      'top': top / np.maximum(height - h, 1)
  }


def timm_windows(shape):
  return timm_fixtures.array(f'crop_{shape[0]}x{shape[1]}').astype(np.int64)


def test_the_rsb_recipes_use_timms_sampler():
  for recipe in ('rsb_a1', 'rsb_a2', 'rsb_a3'):
    dataset = imagenet.get_config(f'recipe={recipe}').dataset
    assert dataset.crop_sampler == 'timm'
    assert tuple(dataset.crop_area_range) == tuple(META['scale'])
  assert imagenet.get_config('recipe=paper').dataset.crop_sampler == 'tf'


def drawn(windows, shape):
  """The windows that are not the fallback, and the share that is."""
  fallback = np.all(windows == FALLBACKS[shape], axis=1)
  return windows[~fallback], float(fallback.mean())


@pytest.mark.parametrize('shape', SHAPES)
def test_timms_sampler_draws_timms_windows(shape):
  ours, ours_share = drawn(our_windows(shape, 'timm'), shape)
  theirs, their_share = drawn(timm_windows(shape), shape)
  ours, theirs = statistics(ours, shape), statistics(theirs, shape)
  for key in ours:
    p = scipy.stats.ks_2samp(ours[key], theirs[key]).pvalue
    assert p > P_MIN, f'{shape} {key}: KS p={p:.2e}, means {ours[key].mean():.4f} (ours) ' \
                      f'{theirs[key].mean():.4f} (timm)'
  # Two shares of 3,000 draws: the standard error of their difference is at most 0.013.
  assert abs(ours_share - their_share) < 0.05, (ours_share, their_share)


def test_the_strip_falls_back_often():
  # On the 60x400 strip most draws do not fit (8% of the area is 1,920 pixels, taller than 60
  # at aspect 4/3 from about 4,900 on): about 43% of the crops are timm's centre crop.
  _, share = drawn(timm_windows((60, 400)), (60, 400))
  assert 0.35 < share < 0.5
  assert drawn(timm_windows((375, 500)), (375, 500))[1] < 0.01


def test_the_tf_sampler_is_told_apart_by_the_same_test():
  # The check has the power to see the difference that made the recipes switch.
  shape = (375, 500)
  ours, theirs = statistics(our_windows(shape, 'tf'), shape), statistics(timm_windows(shape), shape)
  assert scipy.stats.ks_2samp(ours['area'], theirs['area']).pvalue < 1e-6
  assert ours['area'].mean() < theirs['area'].mean() - 0.04
