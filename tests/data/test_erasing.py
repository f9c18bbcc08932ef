"""Random erasing: the box it draws, the noise it fills in, against numpy."""

import math

import numpy as np
import pytest
import tensorflow as tf

from se_flax.data import augment
from se_flax.data import datasets
from se_flax.errors import ConfigError
from tests.data.dataset_configs import dataset_config

MEAN, STD = datasets.IMAGENET_MEAN, datasets.IMAGENET_STD
SEEDS = [tf.constant([s, 3], tf.int64) for s in range(200)]


def _image(seed=0, shape=(24, 20, 3)):
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def test_erase_fills_the_box_with_rounded_noise():
  image, box = _image(), (5, 3, 7, 11)  # top, left, height, width
  noise = np.random.RandomState(1).standard_normal(image.shape).astype(np.float32)
  out = augment.erase(tf.constant(image), tf.constant(box), tf.constant(noise), MEAN, STD).numpy()
  expected = image.copy()
  fill = np.clip(np.round(np.asarray(MEAN, np.float32) + np.asarray(STD, np.float32) * noise), 0,
                 255)
  expected[5:12, 3:14] = fill[5:12, 3:14]
  np.testing.assert_array_equal(out, expected)


def test_random_erasing_equals_numpy_for_its_seed():
  image = _image()
  for seed in SEEDS[:20]:
    apply_seed, box_seed, noise_seed = augment.split_seed(seed, 3)
    out = augment.random_erasing(tf.constant(image), seed, 0.5, MEAN, STD).numpy()
    expected = image.copy()
    if tf.random.stateless_uniform([], apply_seed) < 0.5:
      top, left, h, w = augment.sample_erase_box(tf.constant(image.shape), box_seed).numpy()
      noise = tf.random.stateless_normal(image.shape, noise_seed).numpy()
      fill = np.clip(np.round(np.float32(MEAN) + np.float32(STD) * noise), 0, 255)
      expected[top:top + h, left:left + w] = fill[top:top + h, left:left + w]
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out,
                                  augment.random_erasing(tf.constant(image), seed, 0.5, MEAN, STD))


def test_boxes_follow_timm_ranges():
  height, width = 40, 30
  seeds = tf.data.Dataset.from_tensor_slices(tf.stack(SEEDS))
  boxes = next(
      seeds.map(lambda s: augment.sample_erase_box(tf.constant([height, width, 3]), s)).batch(
          len(SEEDS)).as_numpy_iterator())
  top, left, h, w = boxes.T
  assert np.all(h > 0) and np.all(h < height) and np.all(w > 0) and np.all(w < width)
  assert np.all(top + h <= height) and np.all(left + w <= width)
  area = h * w / (height * width)
  # Sides rounded to whole pixels move the area and the aspect by up to about a pixel.
  assert area.min() > 0.02 * 0.6 and area.max() < 1 / 3 * 1.3
  aspect = h / w
  assert aspect.min() > 0.3 * 0.7 and aspect.max() < 3.3 * 1.4
  assert np.mean(np.log(aspect) < 0) > 0.3 and np.mean(np.log(aspect) > 0) > 0.3
  assert len(set(map(tuple, boxes))) > 150


def test_no_box_when_no_draw_fits():
  # Nearly the whole area: a box under 10 pixels on both sides of a 10x10 image needs an
  # aspect ratio below 0.9 and above 1.1 at once, so all ten draws fail.
  for seed in SEEDS[:5]:
    box = augment.sample_erase_box(tf.constant([10, 10, 3]), seed, area_range=(0.99, 1.0))
    np.testing.assert_array_equal(box[2:], [0, 0])


def test_probability_and_normalised_noise():
  image = tf.constant(_image(2, (32, 32, 3)))
  erased, values = 0, []
  seeds = tf.data.Dataset.from_tensor_slices(tf.stack(SEEDS))
  for out in seeds.map(lambda s: augment.random_erasing(image, s, 0.3, MEAN, STD)):
    out = out.numpy()
    changed = np.any(out != image.numpy(), axis=-1)
    erased += changed.any()
    values.append((out[changed] - np.asarray(MEAN)) / np.asarray(STD))
  assert 0.2 < erased / len(SEEDS) < 0.4
  normalised = np.concatenate(values).ravel()
  # N(0, 1) after normalisation, up to rounding to whole pixel values (std/255 < 1%).
  assert abs(normalised.mean()) < 0.05 and abs(normalised.std() - 1) < 0.05
  assert math.isclose(np.mean(np.abs(normalised) < 1), 0.683, abs_tol=0.03)


@pytest.mark.parametrize('value', [-0.1, 1.5])
def test_check_config(value):
  cfg = dataset_config('imagenet2012', '/unused', random_erasing=value)
  with pytest.raises(
      ConfigError, match=rf'config.dataset.random_erasing={value} must be in '
      r'\[0, 1\] \(a probability\)'):
    datasets.check_config(cfg)
  cfg.random_erasing = 0.25
  datasets.check_config(cfg)
