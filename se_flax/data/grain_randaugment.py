"""RandAugment for the grain loader: timm's ops run by Pillow itself, no TensorFlow.

The op set, the magnitude maps, the `increasing` variants and the constants
come from se_flax/data/randaugment_policy.py, as the tf.data pipeline's
se_flax/data/randaugment.py takes them. That module's TensorFlow ops
reproduce Pillow's ImageOps, ImageEnhance and Image.transform, the calls timm
makes; here those calls are made directly, with the same two departures from
timm: NEAREST resampling and `policy.FILL` outside the image. The pixel ops
equal tf.data's pixel for pixel; the geometric ones too, except where
TensorFlow's float32 coordinates put a point within rounding of a pixel edge
on the neighbouring pixel (randaugment.affine).

An op's argument is computed in float32 from a float32 magnitude, as in
TensorFlow, so both loaders hand the op the same number. Draws come from a
`numpy.random.Generator` the loader keys by (seed, epoch, example index):
equal to tf.data's in distribution, not sample by sample.
"""

import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps

from se_flax.data import randaugment_policy as policy


def _fill(image, fill):
  return fill if image.mode == 'L' else (fill,) * len(image.getbands())


def posterize(image, bits):
  """ImageOps.posterize; 0 bits (timm's Posterize below magnitude 2.5) is black.

  Pillow now refuses 0 bits; the Pillow timm was written for, and TensorFlow's
  op, give black.
  """
  if bits <= 0:
    return Image.new(image.mode, image.size)
  return ImageOps.posterize(image, min(bits, 8))


def solarize_add(image, add, threshold=128):
  """timm's solarize_add: `add` added (saturating at 255) to the pixels below `threshold`."""
  lut = [min(255, i + add) if i < threshold else i for i in range(256)]
  return image.point(lut * len(image.getbands()))


def affine(image, matrix, fill):
  """Image.transform(AFFINE, NEAREST): the output (x, y) samples the input at matrix @ (x, y, 1)."""
  return image.transform(image.size, Image.AFFINE, tuple(float(m) for m in matrix),
                         resample=Image.NEAREST, fillcolor=_fill(image, fill))


def _translate(image, fraction, axis, fill):
  # The shift in float32, as TensorFlow's op computes it from the same fraction.
  pixels = float(np.float32(fraction) * np.float32(image.size[axis]))
  return affine(image, (1, 0, pixels, 0, 1, 0) if axis == 0 else (1, 0, 0, 0, 1, pixels), fill)


# name -> op(PIL image, argument, fill) -> PIL image; the argument comes from policy.LEVELS.
_OPS = {
    'AutoContrast': lambda im, _, __: ImageOps.autocontrast(im),
    'Equalize': lambda im, _, __: ImageOps.equalize(im),
    'Invert': lambda im, _, __: ImageOps.invert(im),
    'Rotate': lambda im, a, f: im.rotate(float(a), resample=Image.NEAREST, fillcolor=_fill(im, f)),
    'Posterize': lambda im, a, _: posterize(im, int(a)),
    'PosterizeIncreasing': lambda im, a, _: posterize(im, int(a)),
    'Solarize': lambda im, a, _: ImageOps.solarize(im, int(a)),
    'SolarizeIncreasing': lambda im, a, _: ImageOps.solarize(im, int(a)),
    'SolarizeAdd': lambda im, a, _: solarize_add(im, int(a)),
    'Color': lambda im, a, _: ImageEnhance.Color(im).enhance(float(a)),
    'ColorIncreasing': lambda im, a, _: ImageEnhance.Color(im).enhance(float(a)),
    'Contrast': lambda im, a, _: ImageEnhance.Contrast(im).enhance(float(a)),
    'ContrastIncreasing': lambda im, a, _: ImageEnhance.Contrast(im).enhance(float(a)),
    'Brightness': lambda im, a, _: ImageEnhance.Brightness(im).enhance(float(a)),
    'BrightnessIncreasing': lambda im, a, _: ImageEnhance.Brightness(im).enhance(float(a)),
    'Sharpness': lambda im, a, _: ImageEnhance.Sharpness(im).enhance(float(a)),
    'SharpnessIncreasing': lambda im, a, _: ImageEnhance.Sharpness(im).enhance(float(a)),
    'ShearX': lambda im, a, f: affine(im, (1, a, 0, 0, 1, 0), f),
    'ShearY': lambda im, a, f: affine(im, (1, 0, 0, a, 1, 0), f),
    'TranslateXRel': lambda im, a, f: _translate(im, a, 0, f),
    'TranslateYRel': lambda im, a, f: _translate(im, a, 1, f),
}


def to_pil(image):
  """A Pillow image of uint8 (H, W, C), C = 1 ('L') or 3 ('RGB')."""
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def to_array(image, channels):
  """uint8 (H, W, channels) of a Pillow image."""
  out = np.asarray(image)
  return out[..., None] if channels == 1 else out


def level_to_arg(name, level, negate=False):
  """The argument op `name` gets at magnitude `level` (0..10); None for the fixed ops."""
  return policy.level_to_arg(np, name, np.float32(level), bool(negate))


def apply_pil(name, image, level, negate=False, fill=policy.FILL):
  """Op `name` of a Pillow image at magnitude `level`, the sign flipped when `negate`."""
  return _OPS[name](image, level_to_arg(name, level, negate), fill)


def apply_op(name, image, level, negate=False, fill=policy.FILL):
  """Op `name` of uint8 (H, W, C) `image`: randaugment.apply_op without TensorFlow."""
  return to_array(apply_pil(name, to_pil(image), level, negate, fill), image.shape[-1])


def sample_op(rng, magnitude, magnitude_std, num_transforms=len(policy.TRANSFORMS)):
  """(op index, applied, float32 level, negate) of one RandAugment layer, drawn from `rng`.

  Every layer draws the same four numbers whatever it finds, so the draws of
  the next layer do not depend on this one's.
  """
  index = int(rng.integers(num_transforms))
  applied = bool(rng.random() < policy.APPLY_PROB)
  noise = np.float32(rng.standard_normal())
  negate = bool(rng.random() < policy.NEGATE_PROB)
  level = np.float32(magnitude)
  if magnitude_std > 0:
    level = level + np.float32(magnitude_std) * noise
  level = np.float32(min(max(level, np.float32(0)), np.float32(policy.LEVEL_MAX)))
  return index, applied, level, negate


def rand_augment(image, rng, num_ops, magnitude, magnitude_std=0.0, increasing=False,
                 fill=policy.FILL):
  """RandAugment of one uint8 (H, W, C) image: randaugment.rand_augment, drawn from `rng`.

  Args:
    image: uint8 (H, W, C), C = 1 or 3.
    rng: numpy.random.Generator; `num_ops` layers draw four numbers each.
    num_ops: N, ops drawn uniformly with replacement.
    magnitude: M on the 0..10 scale.
    magnitude_std: std of the per-op Gaussian noise on M (0: M exactly).
    increasing: timm's "inc1" variants, whose severity grows with M.
    fill: the value of pixels from outside the image (geometric ops).

  Returns:
    uint8, the shape of `image`.
  """
  names = policy.transforms(increasing)
  pil = None
  for _ in range(num_ops):
    index, applied, level, negate = sample_op(rng, magnitude, magnitude_std, len(names))
    if applied:
      pil = apply_pil(names[index], to_pil(image) if pil is None else pil, level, negate, fill)
  return image if pil is None else to_array(pil, image.shape[-1])
