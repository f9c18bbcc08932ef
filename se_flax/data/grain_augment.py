"""The grain loader's augmentations in NumPy and Pillow: no TensorFlow.

Each function mirrors one of se_flax/data/augment.py, which the tf.data
pipeline runs. Random draws come from a `numpy.random.Generator` the loader
keys by (seed, epoch, example index), so they are reproducible but not the
same numbers as TensorFlow's Philox streams: the random parts are equal to
tf.data's in distribution, not sample by sample. The deterministic parts are
transcriptions of TensorFlow's kernels, so that, given the same window, a
crop, a resize or an evaluation image equals tf.data's:

* the random-size crop window under sampler 'tf' follows TensorFlow's
  SampleDistortedBoundingBox kernel (tensorflow/core/kernels/image/
  sample_distorted_bounding_box_op.cc: an aspect ratio uniform in the range,
  a height uniform between the ones the area range allows, an offset uniform
  over the positions that leave the window inside the image, excluding the
  last one, as the kernel's `Uniform(n)` does); under 'timm', timm's
  RandomResizedCrop as augment.timm_crop_window describes it;
* the window is decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling,
  by the ratio rule of augment.jpeg_ratio, with libjpeg-turbo's accurate
  integer IDCT and smooth chroma upsampling, as the tf.data pipeline's
  decode: through simplejpeg, which decodes straight into a NumPy array
  (Pillow, the fallback for what simplejpeg does not read, fills its own
  image buffer and copies it out twice);
* the training crop's bilinear resize uses half-pixel centres
  (tf.image.resize, antialias=False), through OpenCV in fixed point on the
  uint8 pixels: within one level of TensorFlow's rounded float32 values
  (resize_bilinear);
* the evaluation's antialiased resize uses the triangle kernel of
  TensorFlow's ScaleAndTranslate (scale_and_translate_op.cc), in float32.
"""

import io
import math
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image
import simplejpeg

# The tf.data pipeline's constants, defined there once: augment.py imports TensorFlow, so they
# are restated here and tests/data/test_grain_augment.py checks that both agree.
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
CROP_MAX_ATTEMPTS = 10
JPEG_RATIOS = (1, 2, 4, 8)


class UndecodableImage(ValueError):
  """The stored bytes are no image Pillow can decode (a truncated or corrupt JPEG)."""


def resize_in_callers_thread():
  """Turns OpenCV's own thread pool off, for the process: the loader decodes and resizes in
  threads of its own, one per core, with which the pool would compete for the same cores.
  Called when a loader is built, not on import."""
  cv2.setNumThreads(1)


def pad_crop(image, rng, pad, flip):
  """Zero-pads `pad` pixels on every side, crops the stored size at random, mirrors with p=1/2.

  As augment.pad_and_random_crop (an offset uniform in [0, 2 * pad] on each
  axis) followed by augment.random_flip when `flip`.
  """
  height, width = image.shape[:2]
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  top, left = rng.integers(0, 2 * pad + 1, size=2)
  out = padded[top:top + height, left:left + width]
  if flip and rng.random() < 0.5:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def _lrint(x):
  # C's lrintf under the default rounding mode: half to even, as np.rint.
  return int(np.rint(np.float32(x)))


def _tf_random_crop(width, height, min_rel, max_rel, aspect, rng):
  """One attempt of TensorFlow's GenerateRandomCrop: (y, x, h, w) or None."""
  f32 = np.float32
  min_area = f32(min_rel) * f32(width) * f32(height)
  max_area = f32(max_rel) * f32(width) * f32(height)
  aspect = f32(aspect)
  crop_h = _lrint(np.sqrt(f32(min_area / aspect)))
  max_h = _lrint(np.sqrt(f32(max_area / aspect)))
  if _lrint(f32(max_h) * aspect) > width:
    max_h = int((width + 0.5 - 0.0000001) / aspect)
    if _lrint(f32(max_h) * aspect) > width:
      max_h -= 1
  max_h = min(max_h, height)
  crop_h = min(crop_h, max_h)
  if crop_h < max_h:
    crop_h += int(rng.integers(0, max_h - crop_h + 1))
  crop_w = _lrint(f32(crop_h) * aspect)
  area = crop_w * crop_h
  if area < min_area:
    crop_h += 1
    crop_w = _lrint(f32(crop_h) * aspect)
    area = crop_w * crop_h
  if area < min_area:
    return None
  if area > max_area:
    crop_h -= 1
    crop_w = _lrint(f32(crop_h) * aspect)
    area = crop_w * crop_h
  if (area < min_area or area > max_area or crop_w > width or crop_h > height or crop_w <= 0
      or crop_h <= 0):
    return None
  y = int(rng.integers(0, height - crop_h)) if crop_h < height else 0
  x = int(rng.integers(0, width - crop_w)) if crop_w < width else 0
  return y, x, crop_h, crop_w


def _center_window(height, width, fraction):
  """augment._center_window: a centred square of `fraction` of the short side."""
  side = max(int(np.float32(min(height, width)) * np.float32(fraction)), 1)
  return (height - side + 1) // 2, (width - side + 1) // 2, side, side


def tf_crop_window(height, width, rng, *, fallback_fraction, area_range=CROP_AREA_RANGE,
                   aspect_range=CROP_ASPECT_RANGE, max_attempts=CROP_MAX_ATTEMPTS):
  """augment.sample_crop_window under sampler 'tf': (y, x, h, w).

  The whole image as the bounding box, at least area_range[0] of it covered;
  after `max_attempts` failed draws, the centred square of the evaluation crop.
  """
  low, high = aspect_range
  for _ in range(max_attempts):
    aspect = np.float32(rng.random(dtype=np.float32)) * np.float32(high - low) + np.float32(low)
    window = _tf_random_crop(width, height, area_range[0], area_range[1], aspect, rng)
    # Covering the whole-image box by area_range[0]: the crop's own area already ensures it.
    if window is not None and window[2:] != (height, width):
      return window
    if window is not None:
      break
  return _center_window(height, width, fallback_fraction)


def timm_crop_window(height, width, rng, *, area_range=CROP_AREA_RANGE,
                     aspect_range=CROP_ASPECT_RANGE, max_attempts=CROP_MAX_ATTEMPTS):
  """augment.timm_crop_window: (y, x, h, w) of timm's RandomResizedCrop."""
  log_low, log_high = math.log(aspect_range[0]), math.log(aspect_range[1])
  for _ in range(max_attempts):
    area = height * width * rng.uniform(*area_range)
    aspect = math.exp(rng.uniform(log_low, log_high))
    box_w, box_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if 0 < box_w <= width and 0 < box_h <= height:
      top = int(rng.integers(0, height - box_h + 1))
      left = int(rng.integers(0, width - box_w + 1))
      return top, left, box_h, box_w
  low, high = min(aspect_range), max(aspect_range)
  ratio = width / height
  fall_h = round(width / low) if ratio < low else height
  fall_w = round(height * high) if ratio > high else width
  return (height - fall_h) // 2, (width - fall_w) // 2, fall_h, fall_w


def jpeg_ratio(window, image_size):
  """augment.jpeg_ratio: the largest DCT scale that leaves the window's short side >= the output."""
  short = min(window[2], window[3])
  return max(r for r in JPEG_RATIOS if r == 1 or short >= r * image_size)


def open_jpeg(image_bytes):
  """A Pillow image of JPEG bytes, not yet decoded; raises UndecodableImage when they are none."""
  try:
    image = Image.open(io.BytesIO(image_bytes))
    image.size  # pylint: disable=pointless-statement  (the header is parsed by now)
  except (OSError, SyntaxError) as e:
    raise UndecodableImage(str(e)) from None
  return image


class Jpeg(NamedTuple):
  """Stored image bytes and the size their header gives, not yet decoded."""
  data: bytes
  height: int
  width: int
  # Sequential JPEGs: where the frame header's two bytes of height are (0: not one) and the
  # rows of one MCU, so that a decode can stop below the crop window (decode_window).
  height_at: int = 0
  mcu_rows: int = 8


# Start-of-frame markers of sequential Huffman JPEGs (baseline, extended): one scan of all
# components, or one per component, each read top to bottom once.
_SEQUENTIAL = (0xC0, 0xC1)
# Start of scan, end of image.
_SOS, _EOI = 0xDA, b'\xff\xd9'


def _frame(data):
  """(frame marker, offset of its height, max vertical sampling, offset of the first scan's data).

  None where the bytes do not walk as JPEG marker segments up to a scan.
  """
  frame, at, sampling = 0, 0, 1
  i = 2  # after the start-of-image marker
  while i + 4 <= len(data) and data[i] == 0xFF:
    marker = data[i + 1]
    if marker == 0xFF:  # a fill byte
      i += 1
      continue
    length = int.from_bytes(data[i + 2:i + 4], 'big')
    if marker == _SOS:
      return (frame, at, sampling, i + 2 + length) if frame else None
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
      # Precision (1 byte), height (2), width (2), components (1), then per component its
      # id, sampling factors (horizontal, vertical: 4 bits each) and table.
      frame, at = marker, i + 5
      count = data[i + 9]
      sampling = max((data[i + 11 + 3 * k] & 15 for k in range(count)), default=1)
    i += 2 + length
  return None


def read_header(image_bytes):
  """The Jpeg of `image_bytes`; raises UndecodableImage when they are no image or are truncated.

  A JPEG is truncated when no end-of-image marker follows its first scan's
  data, where a marker's bytes cannot occur (libjpeg, and so Pillow and
  TensorFlow, stops at the end of the data there).
  """
  try:
    height, width, _, _ = simplejpeg.decode_jpeg_header(image_bytes)
  except ValueError:
    # Not a JPEG header libjpeg-turbo reads: Pillow opens what else it can.
    width, height = open_jpeg(image_bytes).size
    return Jpeg(image_bytes, height, width)
  frame = _frame(image_bytes)
  if frame is None:
    return Jpeg(image_bytes, height, width)
  marker, at, sampling, scan = frame
  if not image_bytes.endswith(_EOI) and image_bytes.find(_EOI, scan) < 0:
    raise UndecodableImage('the JPEG ends before its end-of-image marker')
  if marker not in _SEQUENTIAL or sampling > 4:
    return Jpeg(image_bytes, height, width)
  return Jpeg(image_bytes, height, width, at, 8 * sampling)


def _pillow_decode(image_bytes, ratio):
  image = open_jpeg(image_bytes)
  if ratio > 1:
    # draft picks the largest scale that keeps the image at least this size: 1/ratio exactly,
    # and libjpeg then rounds the sides up, as TensorFlow's decoder does.
    image.draft('RGB', (image.size[0] // ratio, image.size[1] // ratio))
  try:
    return np.asarray(image.convert('RGB'))
  except (OSError, SyntaxError) as e:
    raise UndecodableImage(str(e)) from None


def decode_window(jpeg, window, ratio):
  """uint8 (h', w', 3): `window` (y, x, h, w) of a Jpeg decoded at 1/ratio of its size.

  As augment.decode_window: libjpeg scales the whole image in its IDCT and the
  window is scaled to that grid, its corners rounded down. A sequential JPEG
  is decoded down to the window's last MCU row and one more only, as if its
  header gave that height: the rows below cost nothing (libjpeg skips their
  data to the end-of-image marker, with a warning that is not an error here),
  and the window's pixels are those of the whole image's decode, the extra
  MCU row giving the chroma upsampling the same neighbours. TensorFlow's
  decode_and_crop_jpeg stops there too.
  """
  data, height = jpeg.data, jpeg.height
  rows = (-(-(window[0] + window[2]) // jpeg.mcu_rows) + 1) * jpeg.mcu_rows
  if jpeg.height_at and rows < height:
    data = b''.join((data[:jpeg.height_at], rows.to_bytes(2, 'big'), data[jpeg.height_at + 2:]))
    height = rows
  try:
    # The smallest of libjpeg-turbo's scales (M/8) that keeps the sides at least 1/ratio of the
    # image's, rounded up, and reduces them by at least `ratio`: 1/ratio exactly. Not strict:
    # libjpeg's warnings (corrupt data it decodes around) are no errors here, as in Pillow; a
    # truncated JPEG is already undecodable (read_header).
    size = (-(-height // ratio), -(-jpeg.width // ratio))
    pixels = simplejpeg.decode_jpeg(data, 'RGB', min_height=size[0], min_width=size[1],
                                    min_factor=ratio, strict=False)
    if pixels.shape[:2] != size:
      # Images of a few pixels, where another M/8 gives the same sides (never at ratio > 1, which
      # needs a window of twice the output or more).
      raise ValueError(f'decoded at {pixels.shape[:2]}, not {size}')
  except ValueError:
    # An image libjpeg-turbo does not read (or an error it stops at): Pillow decodes it, or it
    # is undecodable.
    pixels = _pillow_decode(jpeg.data, ratio)
  y, x, h, w = (v // ratio for v in window)
  return pixels[y:y + h, x:x + w]


def resize_bilinear(image, size, mirror=False):
  """uint8 (size, size, C): tf.image.resize(image, [size, size], 'bilinear', antialias=False),
  rounded as augment.imagenet_train rounds it, within one level.

  OpenCV's INTER_LINEAR on the uint8 pixels: TensorFlow's half-pixel sampling
  grid and border clamping, with 11-bit fixed-point weights and some
  intermediate bits truncated where TensorFlow interpolates in float32 and
  the pipeline adds 0.5 and truncates: about one value in eight is one level
  lower (a mean of -0.13 levels on photographs' crops). The float32
  conversions and the rounding TensorFlow's values need cost more than the
  interpolation itself (0.6 against 0.25 ms per 224x224 crop on a busy core).
  `mirror` reverses the output's columns.
  """
  out = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
  return cv2.flip(out, 1) if mirror else out


def _triangle_weights(in_size, out_size):
  """(out_size, in_size) float32 weights of ScaleAndTranslate's antialiased triangle kernel."""
  scale = np.float32(out_size) / np.float32(in_size)
  inv_scale = np.float32(1.0) / scale
  kernel_scale = max(inv_scale, np.float32(1.0))
  weights = np.zeros((out_size, in_size), np.float32)
  for x in range(out_size):
    sample = (np.float32(x) + np.float32(0.5)) * inv_scale
    if sample < 0 or sample > in_size:
      continue
    start = min(max(math.ceil(sample - kernel_scale - np.float32(0.5)), 0), in_size - 1)
    end = min(max(math.floor(sample + kernel_scale - np.float32(0.5)), 0), in_size - 1) + 1
    source = np.arange(start, end, dtype=np.float32)
    row = np.maximum(
        np.float32(0),
        np.float32(1) - np.abs((source + np.float32(0.5) - sample) *
                               (np.float32(1) / kernel_scale))).astype(np.float32)
    total = row.sum(dtype=np.float32)
    if abs(total) >= 1000 * np.finfo(np.float32).tiny:
      row = row * (np.float32(1) / total)
    weights[x, start:end] = row
  return weights


def resize_antialias(image, height, width):
  """float32 (height, width, C): tf.image.resize(..., 'bilinear', antialias=True)."""
  image = image.astype(np.float32)
  rows = _triangle_weights(image.shape[0], height)
  cols = _triangle_weights(image.shape[1], width)
  out = np.einsum('yh,hwc->ywc', rows, image, dtype=np.float32)
  return np.einsum('xw,ywc->yxc', cols, out, dtype=np.float32)


def resize_short_side(image, short_side):
  """augment.resize_short_side: min(H, W) becomes `short_side`, the long side rounded."""
  height, width = image.shape[:2]
  scale = short_side / min(height, width)
  if height <= width:
    new_h, new_w = short_side, int(np.round(width * scale))
  else:
    new_h, new_w = int(np.round(height * scale)), short_side
  return resize_antialias(image, new_h, new_w)


def center_crop(image, size):
  """augment.center_crop: offsets (H - size) // 2 and (W - size) // 2."""
  top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
  return image[top:top + size, left:left + size]


def crop_window(jpeg, rng, image_size, eval_resize, area_range, sampler):
  """The training crop's window (y, x, h, w) of a Jpeg, drawn by `sampler`."""
  height, width = jpeg.height, jpeg.width
  if sampler == 'timm':
    return timm_crop_window(height, width, rng, area_range=tuple(area_range))
  return tf_crop_window(height, width, rng, fallback_fraction=image_size / eval_resize,
                        area_range=tuple(area_range))


def crop_to_pixels(jpeg, window, image_size, mirror=False):
  """augment.fast_inception_crop and imagenet_train's rounding, for a given window: uint8.

  `mirror`: flipped left to right, as augment.random_flip flips it.
  """
  crop = decode_window(jpeg, window, jpeg_ratio(window, image_size))
  return resize_bilinear(crop, image_size, mirror)


def imagenet_train(image_bytes, rng, image_size, eval_resize, area_range=CROP_AREA_RANGE,
                   sampler='tf'):
  """augment.imagenet_train: random-size crop decoded at reduced scale, resized, flipped; uint8."""
  jpeg = read_header(image_bytes)
  window = crop_window(jpeg, rng, image_size, eval_resize, area_range, sampler)
  return crop_to_pixels(jpeg, window, image_size, mirror=rng.random() < 0.5)


def imagenet_eval(image_bytes, image_size, eval_resize):
  """augment.decode_resize_center_crop: float32 0..255 (image_size, image_size, 3)."""
  image = open_jpeg(image_bytes)
  try:
    pixels = np.asarray(image.convert('RGB'))
  except (OSError, SyntaxError) as e:
    raise UndecodableImage(str(e)) from None
  return center_crop(resize_short_side(pixels, eval_resize), image_size)


# Random erasing as augment.random_erasing (timm's RandomErasing, mode 'pixel', one box).
ERASE_AREA_RANGE = (0.02, 1.0 / 3.0)
ERASE_ASPECT_RANGE = (0.3, 1.0 / 0.3)
ERASE_MAX_ATTEMPTS = 10


def erase_box(height, width, rng, area_range=ERASE_AREA_RANGE, aspect_range=ERASE_ASPECT_RANGE,
              max_attempts=ERASE_MAX_ATTEMPTS):
  """augment.sample_erase_box: (top, left, h, w) of the first draw smaller than the image, or None.

  An area fraction uniform in `area_range`, an aspect ratio height / width
  log-uniform in `aspect_range`, sides rounded half to even; placed uniformly.
  """
  log_low, log_high = math.log(aspect_range[0]), math.log(aspect_range[1])
  for _ in range(max_attempts):
    area = height * width * rng.uniform(*area_range)
    aspect = math.exp(rng.uniform(log_low, log_high))
    box_h, box_w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if box_h < height and box_w < width:
      return (int(rng.integers(0, height - box_h + 1)), int(rng.integers(0, width - box_w + 1)),
              box_h, box_w)
  return None


def random_erasing(image, rng, probability, mean, std):
  """augment.random_erasing of a uint8 (H, W, C) image: with `probability`, one box of noise.

  The noise pixel is round(mean + std * N(0, 1)) clipped to 0..255, which the
  train step's normalisation turns back into the N(0, 1) value timm erases with.
  """
  if rng.random() >= probability:
    return image
  box = erase_box(image.shape[0], image.shape[1], rng)
  if box is None:
    return image
  top, left, h, w = box
  noise = rng.standard_normal((h, w, image.shape[2]), dtype=np.float32)
  pixels = np.float32(mean) + np.float32(std) * noise
  out = image.copy()
  out[top:top + h, left:left + w] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
  return out
