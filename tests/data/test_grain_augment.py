"""The grain loader's NumPy/Pillow augmentations against the tf.data pipeline's TensorFlow ones.

Deterministic parts (a given window's decode, resize and rounding; the
evaluation image) are compared pixel by pixel; random parts (the crop
windows, the pad-crop offsets and flips) by two-sample statistics over a
few thousand draws of each sampler.
"""

import io

import numpy as np
from PIL import Image
import pytest
from scipy import stats
import tensorflow as tf

from se_flax.data import augment
from se_flax.data import grain_augment

# Draws per sampler: a KS test of this size tells apart area means 0.36 and 0.43 at p < 1e-6.
DRAWS = 1500
# Below this p-value two samplers differ in distribution.
P_MIN = 0.01
HEIGHT, WIDTH = 375, 500


@pytest.fixture(scope='module')
def jpeg():
  """A 500x375 JPEG with detail at every scale: smooth colour fields plus pixel noise."""
  rng = np.random.default_rng(0)
  coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3)).astype(np.uint8))
  smooth = np.asarray(coarse.resize((WIDTH, HEIGHT), Image.BICUBIC)).astype(np.int16)
  pixels = np.clip(smooth + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, 'JPEG', quality=90)
  return out.getvalue()


def test_the_constants_are_the_tf_data_pipelines():
  assert grain_augment.CROP_AREA_RANGE == augment.CROP_AREA_RANGE
  assert grain_augment.CROP_ASPECT_RANGE == augment.CROP_ASPECT_RANGE
  assert grain_augment.CROP_MAX_ATTEMPTS == augment.CROP_MAX_ATTEMPTS
  assert grain_augment.JPEG_RATIOS == augment.JPEG_RATIOS
  assert grain_augment.ERASE_AREA_RANGE == augment.ERASE_AREA_RANGE
  assert grain_augment.ERASE_ASPECT_RANGE == augment.ERASE_ASPECT_RANGE
  assert grain_augment.ERASE_MAX_ATTEMPTS == augment.ERASE_MAX_ATTEMPTS


# (window, output side): decoded at 1/4, 1/2, 1/8 and full scale by the ratio rule.
WINDOWS = [((10, 20, 300, 400), 64), ((5, 7, 200, 150), 64), ((3, 1, 371, 499), 40),
           ((17, 33, 61, 45), 224), ((0, 0, 100, 90), 64)]


@pytest.mark.parametrize('window, size', WINDOWS)
def test_a_windows_decode_equals_tensorflows(jpeg, window, size):
  ratio = grain_augment.jpeg_ratio(window, size)
  assert ratio == int(augment.jpeg_ratio(tf.constant(window), size))
  expected = augment.decode_window(tf.constant(jpeg), tf.constant(window), ratio).numpy()
  got = grain_augment.decode_window(grain_augment.read_header(jpeg), window, ratio)
  assert got.shape == expected.shape
  if ratio > 1:
    np.testing.assert_array_equal(got, expected)
  else:
    # At full scale TensorFlow's cropped decode upsamples the chroma of the window's last
    # column from the window alone; every other pixel is the same.
    np.testing.assert_array_equal(got[:, :-1], expected[:, :-1])


@pytest.mark.parametrize('options', [
    dict(subsampling=0),
    dict(subsampling=1),
    dict(subsampling=2),
    dict(subsampling=2, restart_marker_blocks=3),
    dict(progressive=True),
    dict(mode='L')
])
def test_a_window_decoded_to_its_last_rows_equals_the_whole_images_decode(jpeg, options):
  options = dict(options)
  image = Image.open(io.BytesIO(jpeg)).convert(options.pop('mode', 'RGB'))
  encoded = io.BytesIO()
  image.save(encoded, 'JPEG', quality=90, **options)
  header = grain_augment.read_header(encoded.getvalue())
  # Sequential JPEGs stop below the window; a progressive one is decoded whole.
  assert bool(header.height_at) != bool(options.get('progressive'))
  for y, h in [(0, 40), (100, 150), (200, 175), (17, 300)]:
    for ratio in (1, 2, 4):
      # Pillow decodes the whole image (the same libjpeg-turbo, the same scale).
      whole = Image.open(io.BytesIO(encoded.getvalue()))
      whole.draft('RGB', (WIDTH // ratio, HEIGHT // ratio))
      top, left = y // ratio, 30 // ratio
      expected = np.asarray(whole.convert('RGB'))[top:top + h // ratio, left:left + 400 // ratio]
      got = grain_augment.decode_window(header, (y, 30, h, 400), ratio)
      np.testing.assert_array_equal(got, expected)


def test_what_simplejpeg_rejects_pillow_decodes_or_it_is_undecodable(jpeg):
  pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB'))
  png = io.BytesIO()
  Image.fromarray(pixels).save(png, 'PNG')
  window = (10, 20, 300, 400)
  got = grain_augment.decode_window(grain_augment.read_header(png.getvalue()), window, 2)
  expected = np.asarray(Image.open(png).convert('RGB'))[5:155, 10:210]
  np.testing.assert_array_equal(got, expected)
  with pytest.raises(grain_augment.UndecodableImage):
    grain_augment.decode_window(grain_augment.read_header(jpeg[:len(jpeg) // 2]), window, 1)
  with pytest.raises(grain_augment.UndecodableImage):
    grain_augment.read_header(b'no image')


@pytest.mark.parametrize('mirror', [False, True])
@pytest.mark.parametrize('window, size', [w for w in WINDOWS if w[0][2] >= 2 * w[1]])
def test_the_training_crop_of_a_window_is_tf_datas_within_one_level(jpeg, window, size, mirror):
  crop = augment.decode_window(tf.constant(jpeg), tf.constant(window),
                               augment.jpeg_ratio(tf.constant(window), size))
  expected = tf.cast(
      augment.resize(tf.cast(crop, tf.float32), size, antialias=False) + 0.5, tf.uint8).numpy()
  got = grain_augment.crop_to_pixels(grain_augment.read_header(jpeg), window, size, mirror)
  # The same decode; OpenCV interpolates uint8 pixels in fixed point and truncates some of its
  # intermediate bits where TensorFlow interpolates in float32: about one value in eight is one
  # level lower.
  diff = np.abs(got.astype(np.int16) - (expected[:, ::-1] if mirror else expected))
  assert diff.max() <= 1 and np.mean(diff != 0) < 0.2


@pytest.mark.parametrize('size, resize', [(224, 256), (64, 80), (300, 400)])
def test_the_eval_image_equals_tf_datas(jpeg, size, resize):
  expected = augment.decode_resize_center_crop(tf.constant(jpeg), size, resize).numpy()
  got = grain_augment.imagenet_eval(jpeg, size, resize)
  # float32 sums of the same weights in another order: within a few units in the last place.
  np.testing.assert_allclose(got, expected, rtol=0, atol=255 * 2 ** -20)


def _window_stats(windows):
  h, w = windows[:, 2], windows[:, 3]
  return {
      'area': h * w / (HEIGHT * WIDTH),
      'aspect': w / h,
      'top': windows[:, 0] / np.maximum(HEIGHT - h, 1),
      'left': windows[:, 1] / np.maximum(WIDTH - w, 1)
  }


@pytest.mark.parametrize('sampler', ['tf', 'timm'])
def test_crop_windows_follow_the_tf_data_samplers_distribution(sampler):
  draw = tf.function(lambda seeds: tf.map_fn(
      lambda seed: augment.sample_crop_window(tf.constant([HEIGHT, WIDTH, 3]), seed, sampler=
                                              sampler, fallback_fraction=224 / 256), seeds))
  expected = draw(tf.stack([tf.range(DRAWS), tf.fill([DRAWS], 5)], axis=1)).numpy()
  if sampler == 'tf':
    got = [
        grain_augment.tf_crop_window(HEIGHT, WIDTH, np.random.default_rng(i),
                                     fallback_fraction=224 / 256) for i in range(DRAWS)
    ]
  else:
    got = [
        grain_augment.timm_crop_window(HEIGHT, WIDTH, np.random.default_rng(i))
        for i in range(DRAWS)
    ]
  expected_stats, got_stats = _window_stats(expected), _window_stats(np.array(got))
  for name, values in expected_stats.items():
    assert stats.ks_2samp(values, got_stats[name]).pvalue > P_MIN, name


def test_pad_crop_flip_draws_offsets_and_flips_as_tf_data():
  # Pixel values that name their position: the crop's offset and flip can be read off it.
  side, pad = 10, 4
  image = (np.arange(side * side).reshape(side, side, 1) + 1).astype(np.uint8)
  # The centre pixel and its left neighbour lie inside every crop (offsets 0..2 * pad).
  centre, left = image[side // 2, side // 2, 0], image[side // 2, side // 2 - 1, 0]
  draw = tf.function(lambda seeds: tf.map_fn(
      lambda seed: augment.random_flip(augment.pad_and_random_crop(image, seed[0], pad), seed[1]),
      seeds, fn_output_signature=tf.uint8))
  seeds = tf.stack([
      tf.stack([tf.range(DRAWS), tf.fill([DRAWS], 1)], 1),
      tf.stack([tf.range(DRAWS), tf.fill([DRAWS], 2)], 1)
  ], axis=1)
  expected = draw(seeds).numpy()
  got = np.stack(
      [grain_augment.pad_crop(image, np.random.default_rng(i), pad, True) for i in range(DRAWS)])

  def placement(crops):
    _, y, x = np.nonzero(crops[..., 0] == centre)
    _, _, x_left = np.nonzero(crops[..., 0] == left)
    return y, x, x_left > x  # mirrored: the left neighbour is on the right

  for crops in (expected, got):
    assert np.all((crops[..., 0] == centre).sum(axis=(1, 2)) == 1)
    assert np.all((crops[..., 0] == left).sum(axis=(1, 2)) == 1)
  for e, g in zip(placement(expected), placement(got)):
    values = np.union1d(e, g)
    table = [[np.sum(e == v) for v in values], [np.sum(g == v) for v in values]]
    assert stats.chi2_contingency(table).pvalue > P_MIN


def test_random_erasing_follows_the_tf_data_distribution():
  side, probability = 32, 0.5
  image = np.full((side, side, 3), 7, np.uint8)
  mean, std = (120.0, 110.0, 100.0), (60.0, 55.0, 50.0)
  draw = tf.function(lambda seeds: tf.map_fn(
      lambda seed: augment.random_erasing(image, seed, probability, mean, std), seeds,
      fn_output_signature=tf.uint8))
  expected = draw(tf.stack([tf.range(DRAWS), tf.fill([DRAWS], 3)], axis=1)).numpy()
  got = np.stack([
      grain_augment.random_erasing(image, np.random.default_rng(i), probability, mean, std)
      for i in range(DRAWS)
  ])

  def erased(images):
    # The background is 7 everywhere; a noise pixel equals 7 in all channels with
    # negligible probability at these means and stds.
    inside = (images != 7).any(axis=-1)
    rows, cols = inside.any(axis=2), inside.any(axis=1)
    applied = inside.any(axis=(1, 2))
    heights, widths = rows.sum(axis=1)[applied], cols.sum(axis=1)[applied]
    tops = rows.argmax(axis=1)[applied] / np.maximum(side - heights, 1)
    # Normalised as the train step does: N(0, 1) noise, up to rounding.
    noise = ((images[inside].astype(np.float64) - mean) / std)[:, 0]
    return applied.mean(), {
        'area': heights * widths,
        'aspect': heights / widths,
        'top': tops,
        'noise': noise[:5000]
    }

  (expected_rate, expected_stats), (got_rate, got_stats) = erased(expected), erased(got)
  counts = [[expected_rate * DRAWS, (1 - expected_rate) * DRAWS],
            [got_rate * DRAWS, (1 - got_rate) * DRAWS]]
  assert stats.chi2_contingency(counts).pvalue > P_MIN
  for name, values in expected_stats.items():
    assert stats.ks_2samp(values, got_stats[name]).pvalue > P_MIN, name
