"""RandAugment: every op against PIL, the magnitudes against timm's table, the sampling."""

import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps
import pytest
import tensorflow as tf

from se_flax.data import augment
from se_flax.data import datasets
from se_flax.data import pipeline
from se_flax.data import randaugment as ra
from se_flax.data import randaugment_policy as policy
from se_flax.errors import ConfigError
from tests.data.dataset_configs import dataset_config

FILL = (128, 128, 128)


def _image(seed, lo=0, hi=256, channels=3):
  return np.random.RandomState(seed).randint(lo, hi, (16, 16, channels)).astype(np.uint8)


# Full range, a narrow range (autocontrast and equalize stretch it), nearly flat.
IMAGES = [_image(0), _image(1, 40, 200), _image(2, 100, 103)]


def _pil(image):
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _array(pil_image, channels):
  out = np.asarray(pil_image)
  return out[..., None] if channels == 1 else out


def _assert_pil(ours, pil_out, channels=3):
  np.testing.assert_array_equal(np.asarray(ours), _array(pil_out, channels))


@pytest.mark.parametrize('image', IMAGES)
def test_point_ops_equal_pil(image):
  x, p = tf.constant(image), _pil(image)
  _assert_pil(ra.auto_contrast(x), ImageOps.autocontrast(p))
  _assert_pil(ra.equalize(x), ImageOps.equalize(p))
  _assert_pil(ra.invert(x), ImageOps.invert(p))
  for bits in range(1, 9):
    _assert_pil(ra.posterize(x, bits), ImageOps.posterize(p, bits))
  for threshold in (0, 77, 128, 256):
    _assert_pil(ra.solarize(x, threshold), ImageOps.solarize(p, threshold))
  for add in (0, 33, 110):
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]  # timm's solarize_add
    _assert_pil(ra.solarize_add(x, add), p.point(lut * 3))


def test_posterize_to_no_bits_is_black():
  # timm's Posterize at level < 2.5 asks for 0 bits: black with the Pillow it was written for
  # (recent Pillow refuses 0 bits).
  np.testing.assert_array_equal(ra.posterize(tf.constant(IMAGES[0]), 0), np.zeros((16, 16, 3)))


@pytest.mark.parametrize('image', IMAGES)
@pytest.mark.parametrize('factor', [0.1, 0.37, 1.0, 1.63, 1.9])
def test_enhance_ops_equal_pil(image, factor):
  x, p = tf.constant(image), _pil(image)
  _assert_pil(ra.color(x, factor), ImageEnhance.Color(p).enhance(factor))
  _assert_pil(ra.contrast(x, factor), ImageEnhance.Contrast(p).enhance(factor))
  _assert_pil(ra.brightness(x, factor), ImageEnhance.Brightness(p).enhance(factor))
  _assert_pil(ra.sharpness(x, factor), ImageEnhance.Sharpness(p).enhance(factor))


def test_ops_on_one_channel_images_equal_pil():
  image = _image(3, channels=1)
  x, p = tf.constant(image), _pil(image)
  _assert_pil(ra.equalize(x), ImageOps.equalize(p), 1)
  _assert_pil(ra.auto_contrast(x), ImageOps.autocontrast(p), 1)
  _assert_pil(ra.color(x, 0.3), ImageEnhance.Color(p).enhance(0.3), 1)
  _assert_pil(ra.contrast(x, 0.3), ImageEnhance.Contrast(p).enhance(0.3), 1)
  _assert_pil(ra.sharpness(x, 1.7), ImageEnhance.Sharpness(p).enhance(1.7), 1)
  _assert_pil(ra.rotate(x, 17.0), p.rotate(17.0, resample=Image.NEAREST, fillcolor=128), 1)


def _assert_nearly_pil(ours, pil_out):
  # NEAREST takes the pixel a mapped point falls in; TensorFlow maps in float32, PIL in
  # double (or 16.16 fixed point), so a point within rounding of a pixel edge may take the
  # neighbour. At most 1% of the pixels (2 of 256) may differ, by a whole pixel's value.
  ours, ref = np.asarray(ours), np.asarray(pil_out)
  differ = np.any(ours != ref, axis=-1)
  assert differ.mean() <= 0.01, f'{differ.sum()} of {differ.size} pixels differ'


@pytest.mark.parametrize('image', IMAGES[:2])
def test_geometric_ops_equal_pil_nearest(image):
  x, p = tf.constant(image), _pil(image)
  kwargs = dict(resample=Image.NEAREST, fillcolor=FILL)
  for degrees in (-30.0, -17.3, 4.2, 22.5, 30.0):
    _assert_nearly_pil(ra.rotate(x, degrees), p.rotate(degrees, **kwargs))
  for factor in (-0.3, -0.13, 0.21, 0.3):
    _assert_nearly_pil(ra.shear_x(x, factor),
                       p.transform(p.size, Image.AFFINE, (1, factor, 0, 0, 1, 0), **kwargs))
    _assert_nearly_pil(ra.shear_y(x, factor),
                       p.transform(p.size, Image.AFFINE, (1, 0, 0, factor, 1, 0), **kwargs))
  for fraction in (-0.45, -0.2, 0.13, 0.45):
    shift = fraction * 16
    _assert_nearly_pil(ra.translate_x_rel(x, fraction),
                       p.transform(p.size, Image.AFFINE, (1, 0, shift, 0, 1, 0), **kwargs))
    _assert_nearly_pil(ra.translate_y_rel(x, fraction),
                       p.transform(p.size, Image.AFFINE, (1, 0, 0, 0, 1, shift), **kwargs))


def test_translation_by_whole_pixels_is_a_shift_with_fill():
  image = IMAGES[0]
  out = ra.translate_x_rel(tf.constant(image), 0.25).numpy()  # 4 of 16 pixels
  np.testing.assert_array_equal(out[:, :12], image[:, 4:])
  np.testing.assert_array_equal(out[:, 12:], np.full((16, 4, 3), 128))


# timm's level_to_arg at magnitude 7 (auto_augment.py), worked by hand.
TIMM_AT_7 = {
    'Rotate': 21.0,
    'Posterize': 2,
    'PosterizeIncreasing': 2,
    'Solarize': 179,
    'SolarizeIncreasing': 77,
    'SolarizeAdd': 77,
    'Color': 1.36,
    'ColorIncreasing': 1.63,
    'Contrast': 1.36,
    'BrightnessIncreasing': 1.63,
    'ShearX': 0.21,
    'ShearY': 0.21,
    'TranslateXRel': 0.315,
    'TranslateYRel': 0.315,
}


@pytest.mark.parametrize('name', sorted(TIMM_AT_7))
def test_magnitudes_follow_timm(name):
  assert float(ra.level_to_arg(name, 7.0)) == pytest.approx(TIMM_AT_7[name], abs=1e-5)
  negated = float(ra.level_to_arg(name, 7.0, negate=True))
  if name in ('Rotate', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel'):
    assert negated == pytest.approx(-TIMM_AT_7[name], abs=1e-5)
  elif name.endswith('Increasing') and 'ize' not in name:
    assert negated == pytest.approx(1.0 - 0.63, abs=1e-5)  # 1 - 7/10 * 0.9
  else:
    assert negated == pytest.approx(TIMM_AT_7[name], abs=1e-5)  # unsigned
  assert ra.level_to_arg('Equalize', 7.0) is None


def test_extreme_magnitudes_follow_timm():
  assert float(ra.level_to_arg('ColorIncreasing', 10.0, negate=True)) == pytest.approx(0.1)
  assert float(ra.level_to_arg('Sharpness', 0.0)) == pytest.approx(0.1)
  assert int(ra.level_to_arg('PosterizeIncreasing', 10.0)) == 0
  assert int(ra.level_to_arg('Solarize', 10.0)) == 256


def _samples(magnitude, magnitude_std, num=400):
  """(index, applied, level, negate) arrays of `num` layers with seeds [s, 11]."""
  seeds = tf.data.Dataset.range(num).map(lambda s: tf.stack([s, tf.constant(11, tf.int64)]))
  draws = next(
      seeds.map(lambda seed: ra.sample_op(seed, magnitude, magnitude_std)).batch(
          num).as_numpy_iterator())
  return [np.asarray(d, np.float64) for d in draws]


def test_sampling_is_uniform_half_applied_and_noisy():
  index, applied, level, negate = _samples(7.0, 0.5)
  counts = np.bincount(index.astype(int), minlength=15)
  assert counts.min() > 10 and counts.max() < 45  # 400 draws over 15 ops, about 27 each
  assert 0.42 < applied.mean() < 0.58 and 0.42 < negate.mean() < 0.58
  assert abs(level.mean() - 7.0) < 0.1 and 0.4 < level.std() < 0.6
  _, _, level, _ = _samples(9.8, 2.0)
  assert level.max() == 10.0 and level.min() >= 0.0  # clipped to the 0..10 scale
  _, _, level, _ = _samples(7.0, 0.0, num=20)
  assert np.all(level == 7.0)


def test_rand_augment_is_a_function_of_the_seed():
  image = tf.constant(_image(4, channels=3))
  run = lambda seed: ra.rand_augment(image, tf.constant(seed, tf.int64), 2, 9.0, 0.5).numpy()
  np.testing.assert_array_equal(run([5, 1]), run([5, 1]))
  outputs = [run([s, 1]) for s in range(12)]
  assert len({o.tobytes() for o in outputs}) >= 6  # different draws, different images
  assert any(np.array_equal(o, image.numpy()) for o in outputs)  # 1/4: neither op applied
  np.testing.assert_array_equal(ra.rand_augment(image, tf.constant([5, 1], tf.int64), 0, 9.0),
                                image)


def test_rand_augment_composes_the_drawn_ops():
  image = tf.constant(_image(5))
  seed = tf.constant([3, 9], tf.int64)
  expected = image
  for layer_seed in augment.split_seed(seed, 2):
    index, applied, level, negate = ra.sample_op(layer_seed, 7.0, 0.5)
    if applied:
      name = policy.INCREASING_TRANSFORMS[int(index)]
      expected = ra.apply_op(name, expected, level, negate)
  np.testing.assert_array_equal(ra.rand_augment(image, seed, 2, 7.0, 0.5, increasing=True),
                                expected)


def _cifar_config(data_dir, **randaugment):
  cfg = dataset_config('cifar10', data_dir, image_size=32, eval_split='test', cache=True)
  cfg.randaugment.update(randaugment)
  return cfg


def test_the_pipeline_draws_per_epoch_and_example():
  spec = datasets.get('cifar10')
  cfg = dataset_config('cifar10', '/unused')
  image = tf.constant(_image(6))
  key = lambda epoch, index: pipeline._key(0, pipeline._AUGMENT, epoch, index)
  assert pipeline._recipe(spec, cfg, image, key(0, 5)) is image  # Off by default.
  cfg.randaugment.update(num_ops=2, magnitude=9.0, magnitude_std=0.5, increasing=True)
  out = lambda epoch, index: pipeline._recipe(spec, cfg, image, key(epoch, index)).numpy()
  np.testing.assert_array_equal(out(4, 5), out(4, 5))
  assert len({out(epoch, 5).tobytes() for epoch in range(8)}) >= 4
  assert len({out(4, index).tobytes() for index in range(8)}) >= 4


def test_pipeline_with_randaugment_is_deterministic_and_resumes(cifar10):
  _, data_dir = cifar10
  run = lambda cfg, **kw: pipeline.train_batches(cfg, global_batch_size=4, seed=1, **kw)
  cfg = _cifar_config(data_dir, num_ops=1, magnitude=9.0, magnitude_std=0.5)
  first = run(cfg)
  batches = [next(first)['image'] for _ in range(7)]  # An epoch of 20 and two batches more.
  resumed = run(cfg, start_step=4)  # A fresh pipeline: the same draws.
  for expected in batches[4:]:
    np.testing.assert_array_equal(next(resumed)['image'], expected)
  assert len({image.tobytes() for batch in batches for image in batch}) == 28


@pytest.mark.parametrize('field, value, message', [
    ('num_ops', -1, 'config.dataset.randaugment.num_ops=-1 must be an int >= 0'),
    ('magnitude', 10.5, r'config.dataset.randaugment.magnitude=10.5 must be in \[0, 10\]'),
    ('magnitude', -1.0, r'config.dataset.randaugment.magnitude=-1.0 must be in \[0, 10\]'),
    ('magnitude_std', -0.5, 'config.dataset.randaugment.magnitude_std=-0.5 must be >= 0'),
])
def test_check_config(field, value, message):
  cfg = dataset_config('cifar10', '/unused')
  setattr(cfg.randaugment, field, value)
  with pytest.raises(ConfigError, match=message):
    datasets.check_config(cfg)
  cfg.randaugment.update(num_ops=2, magnitude=10.0, magnitude_std=0.5)
  datasets.check_config(cfg)
