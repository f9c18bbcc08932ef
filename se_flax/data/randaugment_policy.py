"""RandAugment's policy, shared by both loaders: the op set, the magnitude maps, the constants.

Plain Python, no TensorFlow: se_flax/data/randaugment.py runs the ops in
TensorFlow for the tf.data pipeline, se_flax/data/grain_randaugment.py in
Pillow for the grain loader, and both take from here which ops exist, in
which order they are drawn, and what argument an op gets at a magnitude.

The op set, the magnitude-to-argument maps and the `increasing` variants are
those of timm's `rand_augment_transform` ("rand-m7-mstd0.5-inc1" in "ResNet
strikes back"): `num_ops` ops drawn uniformly with replacement, each applied
with probability APPLY_PROB, at magnitude M on a 0..LEVEL_MAX scale plus
Gaussian noise of std `magnitude_std` clipped to that scale, with a sign
flipped with probability NEGATE_PROB for the signed ops.
"""

LEVEL_MAX = 10.0  # timm's _LEVEL_DENOM: the magnitude scale is 0..10
# The value of every channel of a pixel that comes from outside the image (geometric ops):
# timm's fill when no data set mean is given.
FILL = 128
APPLY_PROB = 0.5
NEGATE_PROB = 0.5

# timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, in its order: an op's index in the
# tuple is what the policy draws.
TRANSFORMS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize',
              'SolarizeAdd', 'Color', 'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY',
              'TranslateXRel', 'TranslateYRel')
INCREASING_TRANSFORMS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing',
                         'SolarizeIncreasing', 'SolarizeAdd', 'ColorIncreasing',
                         'ContrastIncreasing', 'BrightnessIncreasing', 'SharpnessIncreasing',
                         'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel')


def transforms(increasing):
  """The names the policy draws from: timm's "inc1" variants when `increasing`."""
  return INCREASING_TRANSFORMS if increasing else TRANSFORMS


# Each map takes `xp`, the array module of the loader that evaluates it (tensorflow or numpy:
# both have floor, where and maximum), so that one definition serves both and the tf.data
# pipeline can evaluate it on tensors inside its graph. `level` is float32 in both, so the
# arguments agree to the last bit.


def _signed(xp, value, negate):
  return xp.where(negate, -value, value)


def _enhance(xp, level, negate):
  del xp, negate
  return level / LEVEL_MAX * 1.8 + 0.1  # 0.1 .. 1.9


def _enhance_increasing(xp, level, negate):
  return xp.maximum(0.1, 1.0 + _signed(xp, level / LEVEL_MAX * 0.9, negate))  # 1 -> 0.1 or 1.9


def _scaled(top, signed=False):
  """level / LEVEL_MAX * top, negated when `signed` and the draw says so."""
  if signed:
    return lambda xp, level, negate: _signed(xp, level / LEVEL_MAX * top, negate)
  return lambda xp, level, negate: level / LEVEL_MAX * top


def _whole(top, reverse=False):
  """floor(level / LEVEL_MAX * top), or `top` minus it when `reverse` (timm's int())."""
  if reverse:
    return lambda xp, level, negate: top - xp.floor(level / LEVEL_MAX * top)
  return lambda xp, level, negate: xp.floor(level / LEVEL_MAX * top)


# name -> its argument at (level, negate), or None for the ops that take none. Whole-number
# arguments (bits, thresholds, additions) are floats of integer value, which the ops cast.
LEVELS = {
    'AutoContrast': None,
    'Equalize': None,
    'Invert': None,
    'Rotate': _scaled(30.0, signed=True),  # degrees
    'Posterize': _whole(4),  # bits kept
    'PosterizeIncreasing': _whole(4, reverse=True),
    'Solarize': _whole(256),  # threshold
    'SolarizeIncreasing': _whole(256, reverse=True),
    'SolarizeAdd': _whole(110),  # added below 128
    'Color': _enhance,
    'ColorIncreasing': _enhance_increasing,
    'Contrast': _enhance,
    'ContrastIncreasing': _enhance_increasing,
    'Brightness': _enhance,
    'BrightnessIncreasing': _enhance_increasing,
    'Sharpness': _enhance,
    'SharpnessIncreasing': _enhance_increasing,
    'ShearX': _scaled(0.3, signed=True),  # shear factor
    'ShearY': _scaled(0.3, signed=True),
    'TranslateXRel': _scaled(0.45, signed=True),  # fraction of the width
    'TranslateYRel': _scaled(0.45, signed=True),
}


def level_to_arg(xp, name, level, negate):
  """The argument timm passes op `name` at float32 magnitude `level`; None for the fixed ops."""
  to_arg = LEVELS[name]
  return None if to_arg is None else to_arg(xp, level, negate)
