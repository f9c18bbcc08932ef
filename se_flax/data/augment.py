"""Pure tf.image functions that turn one stored example into the model's input.

Every random op is stateless: it takes an explicit `seed`, an int32/int64
tensor of shape (2,), and returns the same result for the same seed on any
machine, thread or call order. The pipeline derives that seed from
(run seed, epoch, example index), which makes a training run a function of its
config and seed (docs/design.md, "Determinism").

Images enter as uint8 (H, W, C) in 0..255 (or as JPEG bytes for ImageNet).
Training images leave as uint8 (`to_pixels`; the train step normalises them on
the device, a quarter of the bytes of float32 over the host-to-device link);
evaluation images leave as float32, normalised here (`normalize`), because the
antialiased resize of the ImageNet evaluation gives values between integers. A data set names its augmentations
(se_flax/data/datasets.py, `train_augment` / `eval_augment`); the pipeline looks
them up in `TRAIN` and `EVAL` at the end of this module, whose functions share
one signature:

  TRAIN[name](image, seed, image_size, eval_resize, area_range, sampler)   -> uint8
  EVAL[name](image, image_size, eval_resize)         -> float32 0..255

The random-size crop has two samplers (`config.dataset.crop_sampler`), two
readings of the same description (Szegedy et al. 2015: 8%-100% of the area,
aspect 3/4-4/3). 'tf' is tf.image's bounding-box sampler, the one Google's
TPU ResNets and the flax ImageNet example use: it draws the aspect ratio and
the height uniformly. 'timm' is timm's (and torchvision's)
RandomResizedCrop, the one "ResNet strikes back" trained with: the area
uniform, the aspect ratio log-uniform, 10 attempts and a centre crop after
them. Over 3,000 draws on a 375x500 image the mean crop covers 0.36 of the
image under 'tf' and 0.43 under 'timm'.
"""

import math

import tensorflow as tf

from se_flax.data import datasets

# Random-size crop of Szegedy et al. (2015), as the paper trains (Sec. 5.1).
CROP_SAMPLERS = datasets.CROP_SAMPLERS  # config.dataset.crop_sampler; module docstring
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
CROP_MAX_ATTEMPTS = 10
# libjpeg's accurate integer IDCT, PIL's default: decoded pixels then equal those
# of the PyTorch pipelines whose weights se_flax.convert imports (TF's default,
# the fast IDCT, is off by up to ~10 levels on detailed images).
JPEG_DCT_METHOD = 'INTEGER_ACCURATE'


def split_seed(seed, num):
  """Returns `num` independent (2,) seeds derived from `seed`."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, num=num, alg='philox'))


def normalize(image, mean, std):
  """(image - mean) / std per channel, as float32."""
  image = tf.cast(image, tf.float32)
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def resize(image, size, antialias=True):
  """Resizes (H, W, C) to (size, size, C), bilinear (with antialiasing when shrinking)."""
  return tf.image.resize(image, [size, size], method='bilinear', antialias=antialias)


def to_pixels(image):
  """Rounds to uint8 0..255 (uint8 input is returned as it is)."""
  if image.dtype == tf.uint8:
    return image
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def random_flip(image, seed):
  """Mirrors the image left-right with probability 1/2 (Sec. 5.1).

  Through a tf.cond: a select between the image and its mirror (tf.where with
  a scalar condition) broadcasts element by element, 0.7 ms per 224x224 crop
  against 0.02 ms for the branch.
  """
  return tf.image.stateless_random_flip_left_right(image, seed)


def pad_and_random_crop(image, seed, pad):
  """Zero-pads `pad` pixels on every side, then crops the original size at random.

  With pad=4 on 32x32 images this is the CIFAR augmentation the paper adopts
  from He et al. (2016) (Sec. 5.1, Tables 4 and 5).
  """
  shape = tf.shape(image)
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  return tf.image.stateless_random_crop(padded, shape, seed)


def _center_window(height, width, fraction):
  """A centred square window [y, x, h, w] whose side is `fraction` of the short side."""
  side = tf.cast(tf.cast(tf.minimum(height, width), tf.float32) * fraction, tf.int32)
  side = tf.maximum(side, 1)
  return tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])


def sample_crop_window(image_shape, seed, *, sampler='tf', fallback_fraction=224 / 256,
                       area_range=CROP_AREA_RANGE, aspect_range=CROP_ASPECT_RANGE,
                       max_attempts=CROP_MAX_ATTEMPTS):
  """Draws the random-size crop window [y, x, height, width] of an image of `image_shape`.

  The window covers `area_range` of the image area with aspect ratio
  (width / height) in `aspect_range` (Szegedy et al. 2015; paper Sec. 5.1),
  drawn by `sampler` (module docstring). Under 'tf', when all `max_attempts`
  draws fail the window is a centred square of `fallback_fraction` of the
  short side, the evaluation crop; under 'timm', timm's centre crop
  (`timm_crop_window`).

  Args:
    image_shape: int tensor (3,), (height, width, channels).
    seed: (2,) stateless seed.
    sampler: a name in CROP_SAMPLERS.
    fallback_fraction: side of the 'tf' fallback square over the short side.
    area_range: (min, max) fraction of the image area.
    aspect_range: (min, max) width / height.
    max_attempts: draws before falling back.

  Returns:
    int32 tensor (4,).
  """
  if sampler == 'timm':
    return timm_crop_window(image_shape, seed, area_range=area_range, aspect_range=aspect_range,
                            max_attempts=max_attempts)
  if sampler != 'tf':
    raise ValueError(f'crop sampler {sampler!r} is unknown; choose one of {list(CROP_SAMPLERS)}')
  image_shape = tf.cast(image_shape, tf.int32)
  height, width = image_shape[0], image_shape[1]
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=area_range[0], aspect_ratio_range=aspect_range, area_range=area_range,
      max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  failed = tf.logical_and(tf.equal(size[0], height), tf.equal(size[1], width))
  # Both windows are a few scalar ops: a select costs less than a tf.cond's branch.
  return tf.where(failed, _center_window(height, width, fallback_fraction), window)


def timm_crop_window(image_shape, seed, *, area_range=CROP_AREA_RANGE,
                     aspect_range=CROP_ASPECT_RANGE, max_attempts=CROP_MAX_ATTEMPTS):
  """The crop window [y, x, height, width] of timm's RandomResizedCrop (and torchvision's).

  Each of `max_attempts` draws takes an area uniform in `area_range` of the
  image's and an aspect ratio (width / height) log-uniform in `aspect_range`,
  with sides round(sqrt(area * aspect)) wide and round(sqrt(area / aspect))
  high, halves to even as Python's round; the first draw that fits is placed
  uniformly. When none fits, the window is centred: the whole image, cut to
  the nearest aspect ratio in the range when the image lies outside it.
  All draws are made at once; only the first that fits is used.
  """
  area_seed, aspect_seed, top_seed, left_seed = split_seed(seed, 4)
  image_shape = tf.cast(image_shape, tf.int32)
  height, width = image_shape[0], image_shape[1]
  area = tf.cast(height * width, tf.float32) * tf.random.stateless_uniform([max_attempts],
                                                                           area_seed, *area_range)
  aspect = tf.exp(
      tf.random.stateless_uniform([max_attempts], aspect_seed,
                                  *[math.log(a) for a in aspect_range]))
  box_w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
  box_h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
  fits = (box_w <= width) & (box_h <= height) & (box_w > 0) & (box_h > 0)
  first = tf.argmax(tf.cast(fits, tf.int32))
  box_h, box_w = box_h[first], box_w[first]
  # randint(0, height - h) in timm: both ends included.
  top = tf.random.stateless_uniform([], top_seed, 0, tf.maximum(height - box_h, 0) + 1, tf.int32)
  left = tf.random.stateless_uniform([], left_seed, 0, tf.maximum(width - box_w, 0) + 1, tf.int32)
  drawn = tf.stack([top, left, box_h, box_w])
  # The fallback: the image's own aspect ratio, clamped to the range.
  h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  low, high = min(aspect_range), max(aspect_range)
  in_ratio = w_f / h_f
  fall_h = tf.where(in_ratio < low, tf.cast(tf.round(w_f / low), tf.int32), height)
  fall_w = tf.where(in_ratio > high, tf.cast(tf.round(h_f * high), tf.int32), width)
  fallback = tf.stack([(height - fall_h) // 2, (width - fall_w) // 2, fall_h, fall_w])
  return tf.where(fits[first], drawn, fallback)


def inception_crop(image_bytes, seed, image_size, *, antialias=True, **window_kwargs):
  """Decodes only a random-size crop window of a JPEG and resizes it to image_size.

  The exact window at full resolution: the reference for `fast_inception_crop`.

  Args:
    image_bytes: scalar string tensor, a JPEG file.
    seed: (2,) stateless seed.
    image_size: side of the square output.
    antialias: resize with antialiasing.
    **window_kwargs: passed to `sample_crop_window`.

  Returns:
    float32 (image_size, image_size, 3), values in 0..255.
  """
  window = sample_crop_window(tf.image.extract_jpeg_shape(image_bytes), seed, **window_kwargs)
  crop = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3, dct_method=JPEG_DCT_METHOD)
  return resize(crop, image_size, antialias)


# libjpeg's DCT-domain downscaling factors (decode at 1/ratio of the size).
JPEG_RATIOS = (1, 2, 4, 8)


def jpeg_ratio(window, image_size):
  """The largest libjpeg ratio that leaves both sides of `window` at least image_size."""
  short = tf.minimum(window[2], window[3])
  ratio = tf.constant(1, tf.int32)
  for r in JPEG_RATIOS[1:]:
    ratio = tf.where(short >= r * image_size, r, ratio)
  return ratio


def decode_window(image_bytes, window, ratio):
  """Decodes `window` [y, x, h, w] of a JPEG at 1/ratio of its size, in the IDCT.

  The window is scaled to the reduced image (its corners rounded down to that
  grid); libjpeg then decodes only the blocks it covers.
  """

  def branch(r):

    def decode():
      scaled = window // r
      return tf.raw_ops.DecodeAndCropJpeg(contents=image_bytes, crop_window=scaled, channels=3,
                                          ratio=r, dct_method=JPEG_DCT_METHOD)

    return decode

  index = tf.cast(tf.math.log(tf.cast(ratio, tf.float32)) / tf.math.log(2.0) + 0.5, tf.int32)
  return tf.switch_case(index, [branch(r) for r in JPEG_RATIOS])


def fast_inception_crop(image_bytes, seed, image_size, **window_kwargs):
  """The training crop at the decoder's speed: `inception_crop`'s window, decoded small.

  A window at least twice the output on both sides is decoded at 1/2, 1/4 or
  1/8 of its size in libjpeg's IDCT (about that factor squared less work than
  decoding it whole and shrinking it), then resized without antialiasing: the
  reduced decode has already averaged the pixels antialiasing would. The
  pixels differ from `inception_crop`'s by the interpolation only.

  Returns:
    float32 (image_size, image_size, 3), values in 0..255.
  """
  window = sample_crop_window(tf.image.extract_jpeg_shape(image_bytes), seed, **window_kwargs)
  crop = decode_window(image_bytes, window, jpeg_ratio(window, image_size))
  # TF's bilinear kernel gives the same values on float32 input as on uint8, and is not
  # slower on it: up to a quarter faster, depending on the crop's size (docs/performance.md).
  return resize(tf.cast(crop, tf.float32), image_size, antialias=False)


def resize_short_side(image, short_side):
  """Scales (H, W, C) so that min(H, W) == short_side, keeping the aspect ratio."""
  shape = tf.shape(image)
  height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
  scale = short_side / tf.minimum(height, width)
  # The short side is set exactly; rounding applies to the long side only.
  new_height = tf.where(height <= width, short_side, tf.cast(tf.round(height * scale), tf.int32))
  new_width = tf.where(height <= width, tf.cast(tf.round(width * scale), tf.int32), short_side)
  return tf.image.resize(image, tf.stack([new_height, new_width]), method='bilinear',
                         antialias=True)


def center_crop(image, size):
  """The centred (size, size) window of (H, W, C), offsets (H - size) // 2 and (W - size) // 2."""
  shape = tf.shape(image)
  top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
  return image[top:top + size, left:left + size]


def decode_resize_center_crop(image_bytes, image_size, eval_resize):
  """ImageNet evaluation: short side to eval_resize, then the central image_size square.

  The paper reports single-crop error on the 224x224 centre crop after
  resizing the short side to 256 (Table 2).

  Returns:
    float32 (image_size, image_size, 3), values in 0..255.
  """
  image = tf.io.decode_jpeg(image_bytes, channels=3, dct_method=JPEG_DCT_METHOD)
  image = resize_short_side(image, eval_resize)
  return center_crop(image, image_size)


def imagenet_train(image_bytes, seed, image_size, eval_resize, area_range=CROP_AREA_RANGE,
                   sampler='tf'):
  """Random-size crop (`area_range` of the image, drawn by `sampler`) and flip of one ImageNet
  JPEG (Sec. 5.1), as uint8."""
  crop_seed, flip_seed = split_seed(seed, 2)
  image = fast_inception_crop(image_bytes, crop_seed, image_size, area_range=tuple(area_range),
                              fallback_fraction=image_size / eval_resize, sampler=sampler)
  # Bilinear weights are convex: the values stay in 0..255, so rounding needs no clip
  # (one op instead of three, about a tenth of this function's time).
  return random_flip(tf.cast(image + 0.5, tf.uint8), flip_seed)


def pad_crop_flip(image, seed, image_size, eval_resize=None, area_range=None, sampler=None):
  """4-pixel zero pad, random crop of the stored size and flip: CIFAR (Sec. 5.1)."""
  del eval_resize, area_range, sampler  # A fixed-size crop of images stored at the model's size.
  crop_seed, flip_seed = split_seed(seed, 2)
  image = random_flip(pad_and_random_crop(image, crop_seed, 4), flip_seed)
  return to_pixels(maybe_resize(image, image_size))


def pad_crop(image, seed, image_size, eval_resize=None, area_range=None, sampler=None):
  """1-pixel pad and random crop of the stored size, the 8x8 analogue of the CIFAR crop.

  No flip: digits are not mirror-symmetric (a mirrored 2 or 7 is not a digit).
  """
  del eval_resize, area_range, sampler  # A fixed-size crop of images stored at the model's size.
  image = pad_and_random_crop(image, seed, 1)
  return to_pixels(maybe_resize(image, image_size))


def resize_if_needed(image, image_size, eval_resize=None):
  """The whole stored image, resized only when image_size differs from its size."""
  del eval_resize  # No resize-then-crop: the images are stored at the model's size.
  return maybe_resize(image, image_size)


def maybe_resize(image, image_size):
  """Resizes to image_size when it differs from the stored size, as float32."""
  image = tf.cast(image, tf.float32)
  if image.shape[0] == image_size and image.shape[1] == image_size:
    return image
  return resize(image, image_size)


# Random erasing as "ResNet strikes back" uses it (timm's RandomErasing, mode 'pixel', one box).
ERASE_AREA_RANGE = (0.02, 1.0 / 3.0)
ERASE_ASPECT_RANGE = (0.3, 1.0 / 0.3)
ERASE_MAX_ATTEMPTS = 10


def sample_erase_box(image_shape, seed, area_range=ERASE_AREA_RANGE,
                     aspect_range=ERASE_ASPECT_RANGE, max_attempts=ERASE_MAX_ATTEMPTS):
  """The box [top, left, height, width] random erasing draws, or all zeros when it draws none.

  As timm's RandomErasing: up to `max_attempts` draws of an area fraction
  (uniform in `area_range`) and an aspect ratio height / width (log-uniform in
  `aspect_range`), sides rounded half to even (Python's round); the first box
  smaller than the image on both sides is placed uniformly.

  Args:
    image_shape: int tensor (3,), (height, width, channels).
    seed: (2,) stateless seed.

  Returns:
    int32 tensor (4,).
  """
  area_seed, aspect_seed, top_seed, left_seed = split_seed(seed, 4)
  height, width = image_shape[0], image_shape[1]
  area = tf.cast(height * width, tf.float32) * tf.random.stateless_uniform([max_attempts],
                                                                           area_seed, *area_range)
  log_aspect = tf.random.stateless_uniform([max_attempts], aspect_seed,
                                           *[math.log(a) for a in aspect_range])
  box_h = tf.cast(tf.round(tf.sqrt(area * tf.exp(log_aspect))), tf.int32)
  box_w = tf.cast(tf.round(tf.sqrt(area / tf.exp(log_aspect))), tf.int32)
  fits = tf.logical_and(box_h < height, box_w < width)
  first = tf.argmax(tf.cast(fits, tf.int32))
  box_h, box_w = tf.where(fits[first], box_h[first], 0), tf.where(fits[first], box_w[first], 0)
  top = tf.random.stateless_uniform([], top_seed, 0, height - box_h + 1, tf.int32)
  left = tf.random.stateless_uniform([], left_seed, 0, width - box_w + 1, tf.int32)
  return tf.stack([top, left, box_h, box_w])


def erase(image, box, noise, mean, std):
  """Replaces the box [top, left, height, width] of uint8 `image` with noise pixels.

  The pixel is round(mean + std * noise) clipped to 0..255, so that after the
  train step's normalisation it is `noise` (up to rounding and clipping):
  timm fills the normalised float image with N(0, 1) values; uint8 keeps a
  quarter of the bytes between host and device at the cost of that rounding.
  """
  shape = tf.shape(image)
  rows, cols = tf.range(shape[0])[:, None, None], tf.range(shape[1])[None, :, None]
  inside = ((rows >= box[0]) & (rows < box[0] + box[2]) & (cols >= box[1]) &
            (cols < box[1] + box[3]))
  pixels = tf.constant(mean, tf.float32) + tf.constant(std, tf.float32) * noise
  return tf.where(inside, to_pixels(pixels), image)


def random_erasing(image, seed, probability, mean, std):
  """Random erasing (Zhong et al. 2020) of one uint8 (H, W, C) image with `probability`."""
  apply_seed, box_seed, noise_seed = split_seed(seed, 3)
  applied = tf.random.stateless_uniform([], apply_seed) < probability

  def erased():
    box = sample_erase_box(tf.shape(image), box_seed)
    noise = tf.random.stateless_normal(tf.shape(image), noise_seed)
    return erase(image, box, noise, mean, std)

  return tf.cond(applied, erased, lambda: image)


# The augmentations data sets name (datasets.DatasetSpec.train_augment / eval_augment).
TRAIN = {
    'inception_crop': imagenet_train,
    'pad_crop_flip': pad_crop_flip,
    'pad_crop': pad_crop,
}
EVAL = {
    'resize_center_crop': decode_resize_center_crop,
    'resize_if_needed': resize_if_needed,
}
