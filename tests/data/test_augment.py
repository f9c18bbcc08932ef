"""Augmentations against numpy/PIL computations of the same operation."""

import io

import numpy as np
from PIL import Image
import pytest
from sklearn import datasets as sklearn_datasets
import tensorflow as tf

from se_flax.data import augment
from se_flax.data import datasets
from se_flax.data import digits

SEEDS = [tf.constant([s, 7], tf.int64) for s in range(64)]


def _image(height, width, channels, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (height, width, channels)).astype(np.uint8)


def _jpeg(image):
  buffer = io.BytesIO()
  # 4:4:4 chroma: decoders then differ by IDCT rounding only, not by chroma upsampling.
  Image.fromarray(image).save(buffer, format='JPEG', quality=95, subsampling=0)
  return buffer.getvalue()


def _windows(padded, height, width):
  """Every (height, width) window of `padded`, keyed by its offset."""
  return {
      (y, x): padded[y:y + height, x:x + width] for y in range(padded.shape[0] - height + 1)
      for x in range(padded.shape[1] - width + 1)
  }


def _match(out, candidates):
  return [key for key, window in candidates.items() if np.array_equal(out, window)]


def test_random_flip_is_identity_or_mirror():
  image = _image(5, 7, 3)
  flips = []
  for seed in SEEDS:
    out = augment.random_flip(tf.constant(image), seed).numpy()
    assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
    flips.append(np.array_equal(out, image[:, ::-1]))
  assert 0.25 < np.mean(flips) < 0.75
  np.testing.assert_array_equal(augment.random_flip(tf.constant(image), SEEDS[3]),
                                augment.random_flip(tf.constant(image), SEEDS[3]))


@pytest.mark.parametrize('pad', [1, 4])
def test_pad_and_random_crop_is_a_window_of_the_zero_padded_image(pad):
  image = _image(8, 8, 2) | 1  # No zeros inside, so the padding shows.
  windows = _windows(np.pad(image, [(pad, pad), (pad, pad), (0, 0)]), 8, 8)
  offsets = set()
  for seed in SEEDS * 2 if pad == 1 else SEEDS:
    out = augment.pad_and_random_crop(tf.constant(image), seed, pad).numpy()
    found = _match(out, windows)
    assert found, 'not a window of the padded image'
    offsets.update(found)
  if pad == 1:
    assert offsets == set(windows)  # All 9 offsets occur.
  else:
    assert len(offsets) > 30  # Of 81.


def test_pad_crop_crops_and_never_mirrors():
  image = np.zeros((8, 8, 1), np.uint8)
  image[1:7, 1:3] = 200  # A left-heavy stroke: its mirror is another image.
  windows = _windows(np.pad(image, [(1, 1), (1, 1), (0, 0)]), 8, 8)
  mirrored = {k: v[:, ::-1] for k, v in windows.items()}
  for seed in SEEDS:
    out = augment.pad_crop(tf.constant(image), seed, 8).numpy().astype(np.uint8)
    assert _match(out, windows) and not _match(out, mirrored)


def test_pad_crop_flip_is_a_padded_window_or_its_mirror():
  image = _image(32, 32, 3) | 1
  windows = _windows(np.pad(image, [(4, 4), (4, 4), (0, 0)]), 32, 32)
  mirrored = {k: v[:, ::-1] for k, v in windows.items()}
  kinds = set()
  for seed in SEEDS[:24]:
    out = augment.pad_crop_flip(tf.constant(image), seed, 32).numpy().astype(np.uint8)
    if _match(out, windows):
      kinds.add('plain')
    else:
      assert _match(out, mirrored)
      kinds.add('mirror')
  assert kinds == {'plain', 'mirror'}


def test_crop_window_respects_area_and_aspect():
  for height, width in ((300, 400), (500, 200)):
    shape = tf.constant([height, width, 3])
    for seed in SEEDS:
      y, x, h, w = augment.sample_crop_window(shape, seed).numpy()
      assert 0 <= y and y + h <= height and 0 <= x and x + w <= width
      # Integer rounding of the sampled box loosens the bounds by a pixel or so.
      assert 0.08 * 0.95 <= h * w / (height * width) <= 1.0
      assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05


def test_crop_window_falls_back_to_the_centre_square():
  # A square covering half of a 10x1000 strip cannot exist: every draw fails.
  window = augment.sample_crop_window(tf.constant([10, 1000, 3]), SEEDS[0], area_range=(0.5, 1.0),
                                      aspect_range=(1.0, 1.0), fallback_fraction=0.875)
  assert window.numpy().tolist() == [1, 496, 8, 8]


def test_inception_crop_decodes_the_sampled_window():
  image = _image(60, 80, 3, seed=1)
  data = _jpeg(image)
  decoded = np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))  # Independent decoder.
  for seed in SEEDS[:8]:
    y, x, h, w = augment.sample_crop_window(tf.constant([60, 80, 3]), seed).numpy()
    out = augment.inception_crop(tf.constant(data), seed, 24).numpy()
    assert out.shape == (24, 24, 3) and out.dtype == np.float32
    expected = tf.image.resize(decoded[y:y + h, x:x + w].astype(np.float32), [24, 24],
                               antialias=True).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-3)


def test_fast_inception_crop_decodes_the_window_at_the_libjpeg_ratio():
  image = _image(240, 320, 3, seed=3)
  data = _jpeg(image)
  for seed in SEEDS[:8]:
    y, x, h, w = window = augment.sample_crop_window(tf.constant([240, 320, 3]), seed).numpy()
    ratio = int(augment.jpeg_ratio(tf.constant(window), 24))
    assert ratio in (1, 2, 4, 8) and min(h, w) >= ratio * 24
    assert ratio == 8 or min(h, w) < 2 * ratio * 24
    # Independent: decode the whole image at that ratio, cut the scaled window, resize.
    small = tf.io.decode_jpeg(data, channels=3, ratio=ratio, dct_method='INTEGER_ACCURATE').numpy()
    ys, xs, hs, ws = window // ratio
    expected = tf.image.resize(small[ys:ys + hs, xs:xs + ws].astype(np.float32), [24, 24],
                               antialias=False).numpy()
    out = augment.fast_inception_crop(tf.constant(data), seed, 24).numpy()
    assert out.shape == (24, 24, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-3)


def test_imagenet_train_is_the_fast_crop_rounded_and_maybe_mirrored():
  data = tf.constant(_jpeg(_image(240, 320, 3, seed=4)))
  mirrored = []
  for seed in SEEDS[:8]:
    out = augment.imagenet_train(data, seed, 24, 28).numpy()
    assert out.dtype == np.uint8 and out.shape == (24, 24, 3)
    crop_seed, _ = augment.split_seed(seed, 2)
    raw = augment.fast_inception_crop(data, crop_seed, 24, fallback_fraction=24 / 28).numpy()
    assert raw.min() >= 0 and raw.max() <= 255
    ref = np.floor(raw + np.float32(0.5))  # halves round up
    straight = np.abs(out - ref).max() == 0
    mirror = np.abs(out - ref[:, ::-1]).max() == 0
    assert straight or mirror
    mirrored.append(mirror and not straight)
  assert 0 < sum(mirrored) < len(mirrored)


def test_to_pixels_rounds_and_clips():
  out = augment.to_pixels(tf.constant([-3.0, 0.4, 0.6, 254.5, 300.0])).numpy()
  assert out.dtype == np.uint8 and out.tolist() == [0, 0, 1, 254, 255]


def test_inception_crop_of_a_flat_image_is_flat():
  data = _jpeg(np.full((50, 70, 3), (200, 40, 90), np.uint8))
  out = augment.imagenet_train(tf.constant(data), SEEDS[0], 16, 20).numpy()
  np.testing.assert_allclose(out.reshape(-1, 3).mean(0), (200, 40, 90), atol=3)


@pytest.mark.parametrize('shape,expected', [((300, 400), (256, 341)), ((500, 200), (640, 256)),
                                            ((256, 256), (256, 256)), ((100, 150), (256, 384))])
def test_resize_short_side(shape, expected):
  out = augment.resize_short_side(tf.zeros(shape + (3,), tf.uint8), 256)
  assert tuple(out.shape[:2]) == expected


def test_center_crop_matches_numpy():
  image = _image(37, 50, 3)
  out = augment.center_crop(tf.constant(image), 24).numpy()
  np.testing.assert_array_equal(out, image[(37 - 24) // 2:][:24, (50 - 24) // 2:][:, :24])


def test_eval_crop_is_center_of_resized_decoded_image():
  image = _image(90, 120, 3, seed=2)
  data = _jpeg(image)
  decoded = np.asarray(Image.open(io.BytesIO(data)).convert('RGB')).astype(np.float32)
  out = augment.decode_resize_center_crop(tf.constant(data), 56, 64).numpy()
  resized = tf.image.resize(decoded, [64, 85], antialias=True).numpy()  # 120 * 64 / 90 = 85.3
  np.testing.assert_allclose(out, resized[4:60, 14:70], atol=1e-3)


def test_normalize_matches_numpy():
  image = _image(4, 4, 3)
  mean, std = (1.0, 2.0, 3.0), (4.0, 5.0, 6.0)
  np.testing.assert_allclose(
      augment.normalize(tf.constant(image), mean, std).numpy(),
      (image - np.array(mean)) / np.array(std), rtol=1e-6)


def test_digits_statistics_are_those_of_the_train_split():
  data = sklearn_datasets.load_digits()
  train, _ = digits.split_indices(data.target)
  pixels = np.floor(data.images[train] * 255 / 16 + 0.5)
  np.testing.assert_allclose(datasets.DIGITS_MEAN, [pixels.mean()], rtol=1e-7)
  np.testing.assert_allclose(datasets.DIGITS_STD, [pixels.std()], rtol=1e-7)


def test_published_statistics():
  np.testing.assert_allclose(datasets.IMAGENET_MEAN, (123.675, 116.28, 103.53))
  np.testing.assert_allclose(datasets.CIFAR10_MEAN,
                             np.array([0.4914, 0.4822, 0.4465]) * 255, atol=0.02)


def test_every_named_augmentation_exists_and_every_one_is_used():
  specs = [spec for spec in datasets.DATASETS.values() if not spec.synthetic]
  assert {spec.train_augment for spec in specs} == set(augment.TRAIN)
  assert {spec.eval_augment for spec in specs} == set(augment.EVAL)
  for spec in specs:
    assert len(spec.mean) == len(spec.std) == spec.channels


def test_every_augmentation_gives_the_model_size_from_a_stored_image():
  """Each table entry, called with the pipeline's uniform arguments, on its data set's images."""
  for spec in (s for s in datasets.DATASETS.values() if not s.synthetic):
    stored = _image(spec.image_size + 3, spec.image_size + 5, spec.channels)
    if spec.jpeg:
      stored = tf.constant(_jpeg(stored))
    else:
      stored = tf.constant(stored[:spec.image_size, :spec.image_size])
    size, eval_resize = spec.image_size // 2, spec.image_size
    train = augment.TRAIN[spec.train_augment](stored, SEEDS[0], size, eval_resize)
    evaluated = augment.EVAL[spec.eval_augment](stored, size, eval_resize)
    assert train.shape == spec.input_shape(size) and train.dtype == tf.uint8, spec.name
    assert evaluated.shape == spec.input_shape(size) and evaluated.dtype == tf.float32, spec.name


def test_table_entries_are_the_documented_functions():
  # Refactoring into tables must not change a pixel: the entries are the functions tested above.
  image = tf.constant(_image(32, 32, 3) | 1)
  np.testing.assert_array_equal(augment.TRAIN['pad_crop_flip'](image, SEEDS[5], 32, 256),
                                augment.pad_crop_flip(image, SEEDS[5], 32))
  data = tf.constant(_jpeg(_image(60, 80, 3, seed=1)))
  np.testing.assert_array_equal(augment.TRAIN['inception_crop'](data, SEEDS[2], 24, 28),
                                augment.imagenet_train(data, SEEDS[2], 24, 28))
  np.testing.assert_array_equal(augment.EVAL['resize_center_crop'](data, 24, 28),
                                augment.decode_resize_center_crop(data, 24, 28))
  np.testing.assert_array_equal(augment.EVAL['resize_if_needed'](image, 16, 256),
                                augment.maybe_resize(image, 16))


def test_imagenet_train_crops_within_the_configured_area_range():
  # A whole-image range leaves no room for a random window: every seed sees the
  # same crop up to the flip. The default range gives different windows.
  data = tf.constant(_jpeg(_image(240, 320, 3, seed=6)))
  whole = [augment.imagenet_train(data, seed, 24, 28, (1.0, 1.0)).numpy() for seed in SEEDS[:6]]
  for out in whole[1:]:
    assert (np.array_equal(out, whole[0]) or np.array_equal(out, whole[0][:, ::-1]))
  default = [augment.imagenet_train(data, seed, 24, 28).numpy() for seed in SEEDS[:6]]
  assert any(not (np.array_equal(out, default[0]) or np.array_equal(out, default[0][:, ::-1]))
             for out in default[1:])


@pytest.mark.parametrize('area', [(0.0, 1.0), (0.5, 0.25), (0.1, 1.5), (0.5,)])
def test_crop_area_range_outside_0_1_is_a_config_error(area):
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  config = imagenet.get_config()
  config.dataset.crop_area_range = area
  with pytest.raises(datasets.ConfigError, match='config.dataset.crop_area_range'):
    datasets.check_config(config.dataset)


def test_crop_sampler_outside_the_list_is_a_config_error():
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  config = imagenet.get_config()
  for sampler in augment.CROP_SAMPLERS:
    config.dataset.crop_sampler = sampler
    datasets.check_config(config.dataset)
  config.dataset.crop_sampler = 'torchvision'
  with pytest.raises(
      datasets.ConfigError, match=r"config.dataset.crop_sampler='torchvision' is "
      r"not allowed; choose one of \['tf', 'timm'\]"):
    datasets.check_config(config.dataset)
