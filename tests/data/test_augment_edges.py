"""Edges of the augmentations: grey JPEGs, the libjpeg ratio's thresholds, fallbacks, defaults.

References are PIL's decoder and numpy; tf.image.resize is the reference only
for the interpolation itself.
"""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from se_flax.data import augment

SEEDS = [tf.constant([s, 11], tf.int64) for s in range(16)]


def _jpeg(image, mode='RGB'):
  buffer = io.BytesIO()
  Image.fromarray(image).convert(mode).save(buffer, format='JPEG', quality=95, subsampling=0)
  return buffer.getvalue()


def _pil(data):
  """The RGB pixels PIL decodes (libjpeg's accurate integer IDCT), as float32."""
  return np.asarray(Image.open(io.BytesIO(data)).convert('RGB'), np.float32)


def _noise(height, width, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8)


def test_grey_jpegs_decode_to_three_equal_channels():
  # ImageNet holds greyscale JPEGs; every decode path must still give (H, W, 3).
  data = tf.constant(_jpeg(_noise(64, 96), mode='L'))
  outputs = {
      'inception_crop': augment.inception_crop(data, SEEDS[0], 16),
      'fast_inception_crop': augment.fast_inception_crop(data, SEEDS[0], 16),
      'imagenet_train': augment.imagenet_train(data, SEEDS[0], 16, 20),
      'decode_resize_center_crop': augment.decode_resize_center_crop(data, 16, 20),
  }
  for name, out in outputs.items():
    out = out.numpy()
    assert out.shape == (16, 16, 3), name
    np.testing.assert_array_equal(out[..., 0], out[..., 1], err_msg=name)
    np.testing.assert_array_equal(out[..., 0], out[..., 2], err_msg=name)


@pytest.mark.parametrize('short,expected', [(23, 1), (47, 1), (48, 2), (95, 2), (96, 4), (191, 4),
                                            (192, 8), (1000, 8)])
def test_jpeg_ratio_is_the_largest_that_keeps_the_output_size(short, expected):
  # With output 24: ratio r whenever the short side is at least r * 24, the boundary included.
  for window in ([0, 0, short, 1000], [5, 7, 1000, short]):
    ratio = augment.jpeg_ratio(tf.constant(window, tf.int32), 24)
    assert ratio.dtype == tf.int32 and int(ratio) == expected


def test_fast_inception_crop_at_ratio_one_decodes_with_the_accurate_idct():
  # Windows under twice the output are decoded whole-scale; the pixels are PIL's.
  data = _jpeg(_noise(40, 56, seed=2))
  decoded = _pil(data)
  for seed in SEEDS[:6]:
    y, x, h, w = window = augment.sample_crop_window(tf.constant([40, 56, 3]), seed).numpy()
    assert int(augment.jpeg_ratio(tf.constant(window), 24)) == 1
    expected = tf.image.resize(decoded[y:y + h, x:x + w], [24, 24], antialias=False).numpy()
    out = augment.fast_inception_crop(tf.constant(data), seed, 24).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-3)


def test_resize_antialiases_by_default():
  image = tf.constant(_noise(64, 64, seed=3), tf.float32)
  smooth = tf.image.resize(image, [8, 8], method='bilinear', antialias=True).numpy()
  sharp = tf.image.resize(image, [8, 8], method='bilinear', antialias=False).numpy()
  assert np.abs(smooth - sharp).max() > 10
  np.testing.assert_allclose(augment.resize(image, 8).numpy(), smooth, atol=1e-4)
  np.testing.assert_allclose(augment.resize(image, 8, antialias=False).numpy(), sharp, atol=1e-4)


def test_inception_crop_passes_resize_and_window_options_through():
  data = _jpeg(_noise(60, 80, seed=4))
  decoded = _pil(data)
  # The whole image counts as a failed draw: area (1, 1) always falls back to the
  # centred square of fallback_fraction of the short side, 30 here, at (15, 25).
  out = augment.inception_crop(tf.constant(data), SEEDS[1], 12, antialias=False,
                               area_range=(1.0, 1.0), fallback_fraction=0.5).numpy()
  expected = tf.image.resize(decoded[15:45, 25:55], [12, 12], antialias=False).numpy()
  np.testing.assert_allclose(out, expected, atol=1e-3)


def test_imagenet_train_falls_back_to_the_eval_fraction_of_the_short_side():
  # A 20x400 strip: no window of 8% of the area with aspect 3/4..4/3 fits its height,
  # so every draw fails and the crop is the centred square of 8/16 of 20 = 10 pixels.
  data = _jpeg(_noise(20, 400, seed=5))
  centre = _pil(data)[5:15, 195:205]
  expected = np.floor(tf.image.resize(centre, [8, 8], antialias=False).numpy() + 0.5)
  for seed in SEEDS[:4]:
    out = augment.imagenet_train(tf.constant(data), seed, 8, 16).numpy().astype(np.float32)
    assert np.array_equal(out, expected) or np.array_equal(out, expected[:, ::-1])


def test_the_fallback_square_is_at_least_one_pixel():
  # int(1 * 0.875) is 0: a one-pixel-high image still gets a 1x1 window, centred.
  window = augment.sample_crop_window(tf.constant([1, 999, 3]), SEEDS[0], area_range=(0.5, 1.0),
                                      aspect_range=(1.0, 1.0), fallback_fraction=0.875)
  assert window.numpy().tolist() == [0, 499, 1, 1]


def test_normalize_accepts_integer_statistics():
  # A data set may state its mean and std as integers; the result is still float32.
  image = tf.constant(_noise(4, 5, seed=6))
  out = augment.normalize(image, (0, 0, 0), (2, 2, 2))
  assert out.dtype == tf.float32
  np.testing.assert_array_equal(out.numpy(), image.numpy().astype(np.float32) / 2)


def _windows_of(shape, num=32, **kwargs):
  return np.array([
      augment.sample_crop_window(tf.constant(shape), tf.constant([i, 5], tf.int64),
                                 **kwargs).numpy() for i in range(num)
  ])


def test_crop_windows_follow_a_configured_area_range():
  # config.dataset.crop_area_range narrows the area; a window of the whole image is
  # never drawn because the fallback replaces it.
  windows = _windows_of([200, 300, 3], area_range=(0.2, 0.3))
  areas = windows[:, 2] * windows[:, 3] / (200 * 300)
  assert areas.min() >= 0.2 * 0.97 and areas.max() <= 0.3 * 1.03


def test_crop_windows_follow_a_configured_aspect_range():
  windows = _windows_of([300, 300, 3], aspect_range=(2.0, 2.0), area_range=(0.1, 0.4))
  np.testing.assert_allclose(windows[:, 3] / windows[:, 2], 2.0, rtol=0.05)


def test_crop_windows_move_across_both_axes():
  windows = _windows_of([300, 400, 3])
  assert (windows[:, 0] > 0).sum() > len(windows) // 2
  assert (windows[:, 1] > 0).sum() > len(windows) // 2


def test_fewer_attempts_fall_back_more_often():
  # Large, elongated draws rarely fit a square: one attempt fails often, fifty almost never.
  def fallbacks(attempts):
    windows = _windows_of([100, 100, 3], area_range=(0.6, 1.0), aspect_range=(0.3, 3.0),
                          max_attempts=attempts, fallback_fraction=0.5)
    return int((windows == [25, 25, 50, 50]).all(axis=1).sum())

  assert fallbacks(1) >= 8 and fallbacks(50) <= 1


def test_erase_boxes_fit_a_non_square_image():
  # Heights are drawn against the rows, widths against the columns.
  for i in range(48):
    top, left, h, w = augment.sample_erase_box(tf.constant([8, 64, 3]),
                                               tf.constant([i, 3], tf.int64)).numpy()
    assert 0 <= top and top + h <= 8 and h < 8
    assert 0 <= left and left + w <= 64 and w < 64


def test_erase_accepts_integer_statistics():
  image = tf.zeros([4, 4, 3], tf.uint8)
  noise = tf.fill([4, 4, 3], 1.5)
  out = augment.erase(image, tf.constant([1, 1, 2, 2]), noise, (10, 20, 30), (2, 2, 2)).numpy()
  assert out[1:3, 1:3].tolist() == [[[13, 23, 33]] * 2] * 2 and out.sum() == 4 * (13 + 23 + 33)


def _erase_boxes(shape, n=200):
  return np.array([
      augment.sample_erase_box(tf.constant(shape), tf.constant([i, 9], tf.int64)).numpy()
      for i in range(n)
  ])


def test_erase_boxes_reach_every_edge_and_stay_inside():
  boxes = _erase_boxes([6, 6, 3])
  top, left, h, w = boxes[boxes[:, 2] > 0].T
  assert (h < 6).all() and (w < 6).all()
  assert (top == 0).any() and (top + h == 6).any() and (top + h <= 6).all()
  assert (left == 0).any() and (left + w == 6).any() and (left + w <= 6).all()


@pytest.mark.parametrize('shape,side', [([3, 100, 3], 2), ([100, 3, 3], 3)])
def test_erase_boxes_are_strictly_smaller_than_the_image(shape, side):
  # As timm: a box as high (or wide) as the image is redrawn, never used.
  boxes = _erase_boxes(shape)
  drawn = boxes[boxes[:, 2] > 0]
  assert len(drawn) > 0 and (drawn[:, side] < 3).all()


@pytest.mark.parametrize('shape', [(8, 12, 3), (12, 8, 3), (8, 12, 8)])
def test_maybe_resize_resizes_any_image_that_is_not_already_square_at_the_size(shape):
  image = tf.constant(np.random.RandomState(7).randint(0, 256, shape).astype(np.uint8))
  out = augment.maybe_resize(image, 8).numpy()
  assert out.shape == (8, 8, shape[2]) and out.dtype == np.float32
  np.testing.assert_allclose(out, augment.resize(tf.cast(image, tf.float32), 8).numpy())
  same = augment.maybe_resize(image[:8, :8], 8).numpy()
  np.testing.assert_array_equal(same, image[:8, :8].numpy().astype(np.float32))


def test_crop_windows_of_a_small_area_range_are_drawn_not_fallen_back():
  # The bounding box is the whole image, so the area fraction must also bound the
  # box's coverage (min_object_covered); otherwise a range under 10% never fits.
  windows = _windows_of([300, 300, 3], area_range=(0.02, 0.05))
  areas = windows[:, 2] * windows[:, 3] / (300 * 300)
  assert areas.min() >= 0.02 * 0.95 and areas.max() <= 0.05 * 1.05


def test_timm_windows_lie_inside_and_keep_the_area_and_aspect_ranges():
  windows = _windows_of([300, 400, 3], num=64, sampler='timm')
  top, left, h, w = windows.T
  assert (top >= 0).all() and (top + h <= 300).all() and (left >= 0).all()
  assert (left + w <= 400).all()
  # Sides are rounded to whole pixels: the bounds hold to a pixel or so.
  assert (h * w / (300 * 400) >= 0.08 * 0.97).all() and (w / h >= 3 / 4 * 0.97).all()
  assert (w / h <= 4 / 3 * 1.03).all()
  assert len({tuple(x) for x in windows}) == len(windows)  # 64 different draws


@pytest.mark.parametrize(
    'shape,window',
    [
        # Wider than 4/3: the full height, round(20 * 4/3) = 27 wide, centred ((400 - 27) // 2).
        ([20, 400, 3], [0, 186, 20, 27]),
        # Taller than 3/4 allows: the full width, round(20 / (3/4)) = 27 high, centred.
        ([400, 20, 3], [186, 0, 27, 20]),
    ])
def test_timms_fallback_is_the_centred_crop_at_the_nearest_aspect(shape, window):
  # No window of at least 8% of a 20-pixel strip fits at aspect 3/4..4/3: every draw fails.
  for seed in SEEDS[:3]:
    got = augment.sample_crop_window(tf.constant(shape), seed, sampler='timm').numpy().tolist()
    assert got == window


def test_timms_fallback_within_the_range_is_the_whole_image():
  got = augment.sample_crop_window(tf.constant([90, 100, 3]), SEEDS[0], sampler='timm',
                                   area_range=(1.5, 2.0)).numpy().tolist()
  assert got == [0, 0, 90, 100]


def test_imagenet_train_passes_the_sampler_to_the_window():
  data = tf.constant(_jpeg(_noise(240, 320, seed=7)))
  crop_seed, _ = augment.split_seed(SEEDS[4], 2)
  window = augment.sample_crop_window(tf.constant([240, 320, 3]), crop_seed, sampler='timm')
  raw = augment.fast_inception_crop(data, crop_seed, 16, sampler='timm').numpy()
  out = augment.imagenet_train(data, SEEDS[4], 16, 20, sampler='timm').numpy().astype(np.float32)
  ref = np.floor(raw + np.float32(0.5))
  assert np.array_equal(out, ref) or np.array_equal(out, ref[:, ::-1])
  assert window.numpy().tolist() != augment.sample_crop_window(tf.constant([240, 320, 3]),
                                                               crop_seed).numpy().tolist()


def test_an_unknown_sampler_is_refused_by_name():
  with pytest.raises(ValueError, match=r"crop sampler 'torch' is unknown; choose one of "
                     r"\['tf', 'timm'\]"):
    augment.sample_crop_window(tf.constant([20, 30, 3]), SEEDS[0], sampler='torch')
