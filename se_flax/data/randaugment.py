"""RandAugment (Cubuk et al. 2020) on uint8 (H, W, C) images, in TensorFlow, for tf.data.

The op set, the magnitude-to-argument maps, the `increasing` variants and
the constants are timm's, defined once in se_flax/data/randaugment_policy.py
(the grain loader's se_flax/data/grain_randaugment.py takes them from there
too): `num_ops` ops drawn uniformly with replacement, each applied with
probability 1/2, at magnitude M on a 0..10 scale plus Gaussian noise of std
`magnitude_std` clipped to [0, 10], with a random sign for the signed ops.
Every op reproduces its PIL counterpart (ImageOps, ImageEnhance,
Image.transform), the ops timm calls, pixel for pixel; tests/data compare
them. Two choices differ from timm's defaults:

* geometric ops resample with NEAREST (timm draws bilinear or bicubic): the
  pixels stay pixels of the crop, and it is the fastest TensorFlow kernel;
* pixels that come from outside the image take `policy.FILL` (128 in every
  channel), timm's fill when no data set mean is given (its ImageNet factory
  passes the rounded mean, (124, 116, 104)).

Randomness is stateless (a (2,) seed in, the same image out on any machine),
so a resumed run sees the same images (docs/design.md, "Determinism").
"""

import functools
import math

import tensorflow as tf

from se_flax.data import augment
from se_flax.data import randaugment_policy as policy

# PIL's ITU-R 601-2 luma in 16-bit fixed point (its "RGB" -> "L" conversion).
_LUMA = (19595, 38470, 7471)
_SMOOTH = ((1., 1., 1.), (1., 5., 1.), (1., 1., 1.))  # ImageFilter.SMOOTH, divided by 13

# ---------------------------------------------------------------- pixel ops (PIL's semantics)


def _blend(degenerate, image, factor):
  """PIL's Image.blend(degenerate, image, factor): float32 arithmetic, clipped, truncated."""
  degenerate, image = tf.cast(degenerate, tf.float32), tf.cast(image, tf.float32)
  out = degenerate + tf.cast(factor, tf.float32) * (image - degenerate)
  return tf.cast(tf.clip_by_value(out, 0.0, 255.0), tf.uint8)


def _gray(image):
  """PIL's convert('L') as int32 (H, W, 1); a one-channel image is its own gray."""
  if image.shape[-1] == 1:
    return tf.cast(image, tf.int32)
  rgb = tf.cast(image, tf.int32)
  luma = rgb[..., 0:1] * _LUMA[0] + rgb[..., 1:2] * _LUMA[1] + rgb[..., 2:3] * _LUMA[2]
  return tf.bitwise.right_shift(luma + 0x8000, 16)


def auto_contrast(image):
  """ImageOps.autocontrast: each channel's [min, max] stretched to [0, 255]."""
  lo = tf.cast(tf.reduce_min(image, axis=[0, 1]), tf.float64)
  hi = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.float64)
  scale = 255.0 / tf.maximum(hi - lo, 1.0)
  # PIL's lookup table: int(v * scale + offset), in double precision.
  out = tf.floor(tf.cast(image, tf.float64) * scale + (-lo * scale))
  out = tf.cast(tf.clip_by_value(out, 0.0, 255.0), tf.uint8)
  return tf.where(hi > lo, out, image)


def equalize(image):
  """ImageOps.equalize: each channel's histogram flattened, PIL's integer arithmetic."""
  channels = tf.transpose(tf.reshape(tf.cast(image, tf.int32), [-1, image.shape[-1]]))
  hist = tf.math.bincount(channels, minlength=256, maxlength=256, axis=-1)
  last = tf.gather(hist, tf.argmax(tf.cast(hist > 0, tf.int32) * tf.range(256), axis=1),
                   batch_dims=1)
  step = (tf.reduce_sum(hist, axis=1) - last) // 255
  safe = tf.maximum(step, 1)[:, None]
  lut = tf.minimum((tf.cumsum(hist, axis=1, exclusive=True) + safe // 2) // safe, 255)
  equalized = tf.transpose(tf.gather(lut, channels, batch_dims=1))
  # A channel with one value, or too few pixels off its top value, is left as it is.
  out = tf.where(step > 0, equalized, tf.transpose(channels))
  return tf.reshape(tf.cast(out, tf.uint8), tf.shape(image))


def invert(image):
  """ImageOps.invert."""
  return 255 - image


def posterize(image, bits):
  """ImageOps.posterize: keeps the `bits` most significant bits (8 or more: unchanged)."""
  bits = tf.cast(bits, tf.int32)
  mask = tf.cast(tf.bitwise.bitwise_and(-tf.bitwise.left_shift(1, 8 - tf.minimum(bits, 8)), 255),
                 tf.uint8)
  return tf.bitwise.bitwise_and(image, mask)


def solarize(image, threshold):
  """ImageOps.solarize: inverts the pixels at or above `threshold` (0..256)."""
  pixels = tf.cast(image, tf.int32)
  return tf.cast(tf.where(pixels < tf.cast(threshold, tf.int32), pixels, 255 - pixels), tf.uint8)


def solarize_add(image, add, threshold=128):
  """timm's solarize_add: adds `add` (saturating) to the pixels below `threshold`."""
  pixels = tf.cast(image, tf.int32)
  added = tf.minimum(pixels + tf.cast(add, tf.int32), 255)
  return tf.cast(tf.where(pixels < threshold, added, pixels), tf.uint8)


def color(image, factor):
  """ImageEnhance.Color: blend with the gray image (0: gray, 1: unchanged)."""
  gray = tf.broadcast_to(_gray(image), tf.shape(image))
  return _blend(gray, image, factor)


def contrast(image, factor):
  """ImageEnhance.Contrast: blend with the mean gray level, rounded (0: flat gray)."""
  gray = tf.cast(_gray(image), tf.float64)
  mean = tf.floor(tf.reduce_mean(gray) + 0.5)
  return _blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image, factor):
  """ImageEnhance.Brightness: blend with black."""
  return _blend(tf.zeros_like(image), image, factor)


def _smooth(image):
  """ImageFilter.SMOOTH (3x3, centre 5, /13), truncated; the one-pixel border stays as it is."""
  pixels = tf.cast(image, tf.float32)
  kernel = tf.constant(_SMOOTH, tf.float32)[:, :, None, None] / 13.0
  kernel = tf.tile(kernel, [1, 1, image.shape[-1], 1])
  inner = tf.nn.depthwise_conv2d(pixels[None], kernel, [1, 1, 1, 1], 'VALID')[0]
  inner = tf.cast(tf.clip_by_value(inner + 0.5, 0.0, 255.0), tf.uint8)
  border = tf.ones_like(inner, tf.bool)
  mask = tf.pad(border, [[1, 1], [1, 1], [0, 0]])
  return tf.where(mask, tf.pad(inner, [[1, 1], [1, 1], [0, 0]]), image)


def sharpness(image, factor):
  """ImageEnhance.Sharpness: blend with the smoothed image (0: smooth, 2: sharpened)."""
  return _blend(_smooth(image), image, factor)


def affine(image, matrix, fill=policy.FILL):
  """PIL's Image.transform(size, AFFINE, matrix, NEAREST, fillcolor=fill).

  `matrix` (a, b, c, d, e, f) maps an output point (x, y) to the input point
  (a x + b y + c, d x + e y + f), in PIL's continuous coordinates (pixel
  centres at k + 0.5); PIL takes the pixel the point falls in (floor).
  TensorFlow's projective transform maps pixel indices and rounds, so the
  offsets move by half a pixel. Points within float32 rounding of a pixel
  edge may land on the neighbouring pixel.
  """
  a, b, c, d, e, f = (tf.cast(m, tf.float32) for m in matrix)
  transform = tf.stack([a, b, c + 0.5 * (a + b) - 0.5, d, e, f + 0.5 * (d + e) - 0.5, 0.0, 0.0])
  out = tf.raw_ops.ImageProjectiveTransformV3(images=image[None], transforms=transform[None],
                                              output_shape=tf.shape(image)[:2],
                                              fill_value=tf.cast(fill, tf.float32),
                                              interpolation='NEAREST', fill_mode='CONSTANT')
  return tf.ensure_shape(out[0], image.shape)


def rotate(image, degrees, fill=policy.FILL):
  """Image.rotate(degrees, NEAREST, fillcolor=fill): counter-clockwise about the centre."""
  height, width = tf.cast(tf.shape(image)[0], tf.float64), tf.cast(tf.shape(image)[1], tf.float64)
  angle = -tf.cast(degrees, tf.float64) * (math.pi / 180.0)
  cos, sin = tf.cos(angle), tf.sin(angle)
  cx, cy = width / 2.0, height / 2.0
  c = cos * -cx + sin * -cy + cx
  f = -sin * -cx + cos * -cy + cy
  return affine(image, (cos, sin, c, -sin, cos, f), fill)


def shear_x(image, factor, fill=policy.FILL):
  """Shears along x: the output (x, y) samples the input at (x + factor * y, y)."""
  return affine(image, (1.0, factor, 0.0, 0.0, 1.0, 0.0), fill)


def shear_y(image, factor, fill=policy.FILL):
  """Shears along y: the output (x, y) samples the input at (x, y + factor * x)."""
  return affine(image, (1.0, 0.0, 0.0, factor, 1.0, 0.0), fill)


def translate_x_rel(image, fraction, fill=policy.FILL):
  """Shifts by `fraction` of the width (the output samples the input `pixels` to its right)."""
  pixels = fraction * tf.cast(tf.shape(image)[1], tf.float32)
  return affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0), fill)


def translate_y_rel(image, fraction, fill=policy.FILL):
  """Shifts by `fraction` of the height."""
  pixels = fraction * tf.cast(tf.shape(image)[0], tf.float32)
  return affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels), fill)


# ---------------------------------------------------------------- the ops by name

# name -> op(image, arg, fill); the argument comes from policy.LEVELS.
_OPS = {
    'AutoContrast': lambda im, _, __: auto_contrast(im),
    'Equalize': lambda im, _, __: equalize(im),
    'Invert': lambda im, _, __: invert(im),
    'Rotate': rotate,
    'Posterize': lambda im, a, _: posterize(im, a),
    'PosterizeIncreasing': lambda im, a, _: posterize(im, a),
    'Solarize': lambda im, a, _: solarize(im, a),
    'SolarizeIncreasing': lambda im, a, _: solarize(im, a),
    'SolarizeAdd': lambda im, a, _: solarize_add(im, a),
    'Color': lambda im, a, _: color(im, a),
    'ColorIncreasing': lambda im, a, _: color(im, a),
    'Contrast': lambda im, a, _: contrast(im, a),
    'ContrastIncreasing': lambda im, a, _: contrast(im, a),
    'Brightness': lambda im, a, _: brightness(im, a),
    'BrightnessIncreasing': lambda im, a, _: brightness(im, a),
    'Sharpness': lambda im, a, _: sharpness(im, a),
    'SharpnessIncreasing': lambda im, a, _: sharpness(im, a),
    'ShearX': shear_x,
    'ShearY': shear_y,
    'TranslateXRel': translate_x_rel,
    'TranslateYRel': translate_y_rel,
}


def level_to_arg(name, level, negate=False):
  """The argument timm passes op `name` at magnitude `level` (0..10); None for the fixed ops."""
  return policy.level_to_arg(tf, name, tf.cast(level, tf.float32), tf.convert_to_tensor(negate))


def apply_op(name, image, level, negate=False, fill=policy.FILL):
  """Op `name` of uint8 `image` at magnitude `level`, the sign flipped when `negate`."""
  return _OPS[name](image, level_to_arg(name, level, negate), fill)


# ---------------------------------------------------------------- the policy


def sample_op(seed, magnitude, magnitude_std, num_transforms=len(policy.TRANSFORMS)):
  """(op index, applied, level, negate) of one RandAugment layer, a function of `seed`."""
  index_seed, apply_seed, level_seed, sign_seed = augment.split_seed(seed, 4)
  index = tf.random.stateless_uniform([], index_seed, 0, num_transforms, tf.int32)
  applied = tf.random.stateless_uniform([], apply_seed) < policy.APPLY_PROB
  level = tf.constant(magnitude, tf.float32)
  if magnitude_std > 0:
    level += magnitude_std * tf.random.stateless_normal([], level_seed)
  level = tf.clip_by_value(level, 0.0, policy.LEVEL_MAX)
  negate = tf.random.stateless_uniform([], sign_seed) < policy.NEGATE_PROB
  return index, applied, level, negate


def rand_augment(image, seed, num_ops, magnitude, magnitude_std=0.0, increasing=False,
                 fill=policy.FILL):
  """RandAugment of one uint8 (H, W, C) image: `num_ops` layers, each drawn from `seed`.

  Args:
    image: uint8 (H, W, C), C = 1 or 3.
    seed: (2,) stateless seed.
    num_ops: N, ops drawn uniformly with replacement.
    magnitude: M on the 0..10 scale.
    magnitude_std: std of the per-op Gaussian noise on M (0: M exactly).
    increasing: timm's "inc1" variants, whose severity grows with M.
    fill: the value of pixels from outside the image (geometric ops).

  Returns:
    uint8, the shape of `image`.
  """
  names = policy.transforms(increasing)
  for layer_seed in augment.split_seed(seed, num_ops) if num_ops else ():
    image = _layer(image, layer_seed, names, magnitude, magnitude_std, fill)
  return image


def _layer(image, seed, names, magnitude, magnitude_std, fill):
  """One RandAugment layer: an op of `names` drawn from `seed`, applied with probability 1/2."""
  index, applied, level, negate = sample_op(seed, magnitude, magnitude_std, len(names))
  branches = [functools.partial(apply_op, name, image, level, negate, fill) for name in names]
  out = tf.cond(applied, lambda: tf.switch_case(index, branches), lambda: image)
  return tf.ensure_shape(out, image.shape)
