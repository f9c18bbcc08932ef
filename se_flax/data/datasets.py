"""Every fact se_flax knows about a data set, in one entry per data set.

Plain Python (no TensorFlow), so the upfront config check, the sweep planner
and the report read these facts without starting the input pipeline. The
pipeline looks the augmentations up by the names given here (se_flax/data/
augment.py holds them); adding a data set is adding one entry below.
"""

import dataclasses
from typing import Optional

from se_flax.errors import check_choice
from se_flax.errors import check_range
from se_flax.errors import ConfigError

# config.dataset.crop_sampler: how the random-size crop draws its window (se_flax/data/augment.py).
# 'tf': tf.image's bounding-box sampler (aspect and height uniform), the paper recipe's;
# 'timm': timm's and torchvision's RandomResizedCrop (area uniform, aspect log-uniform), RSB's.
CROP_SAMPLERS = ('tf', 'timm')
# config.dataset.loader -> the module that reads data on disk (se_flax/data/feed.py imports it).
# 'tf.data' (the default, the first): tfds's TFRecord files; 'grain': the same data sets'
# ArrayRecord copies, in an order that does not depend on the number of processes.
LOADERS = {'tf.data': 'se_flax.data.pipeline', 'grain': 'se_flax.data.grain_source'}
# The largest image side a config may ask for (train, eval or resize); a larger one is a
# typo (one such float32 image is already 200 MB), caught before it fills the memory.
MAX_IMAGE_SIZE = 4096

# ImageNet RGB statistics (0..255 scale), the values torchvision, timm and the
# flax ImageNet example use; the paper's Caffe models subtract the mean only
# (Sec. 5.1), dividing by the std as well is the common re-implementation.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Per-channel mean and std over the 50,000 CIFAR training images (0..255 scale),
# the published values (CIFAR-10: 0.4914 0.4822 0.4465 / 0.2470 0.2435 0.2616;
# CIFAR-100: 0.5071 0.4865 0.4409 / 0.2673 0.2564 0.2762).
CIFAR10_MEAN = (125.30691805, 122.95039414, 113.86538318)
CIFAR10_STD = (62.99321928, 62.08870764, 66.70489964)
CIFAR100_MEAN = (129.30416561, 124.06996270, 112.43405006)
CIFAR100_STD = (68.17024290, 65.39180804, 70.41837019)
# Mean and std of every pixel of the 1437 digits train images after the
# 0..16 -> 0..255 scaling of se_flax.data.digits; tests/data recompute them
# from scikit-learn's copy of the data.
DIGITS_MEAN = (77.99459595,)
DIGITS_STD = (95.98451841,)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One data set: its shape, its statistics, how it is stored and how it is augmented."""
  name: str
  num_classes: int
  channels: int
  num_train: int  # examples in the canonical train split
  num_eval: int  # examples in the canonical eval split
  mean: tuple  # per channel, 0..255 scale
  std: tuple
  image_size: int  # the stored (and default model) size
  train_augment: str  # a name in augment.TRAIN
  eval_augment: str  # a name in augment.EVAL
  jpeg: bool = False  # stored as JPEG bytes, decoded together with the crop
  in_memory: bool = True  # small enough to cache decoded (config.dataset.cache)
  preparation: str = 'download'  # 'builder' (prepared here), 'manual' (tars), 'download'
  manual_files: tuple = ()  # for preparation='manual': the files the user provides
  manual_source: str = ''  # for preparation='manual': where the user gets them
  train_split: str = 'train'
  eval_split: str = 'test'
  synthetic: bool = False  # generated (se_flax/data/synthetic.py): no files, no TensorFlow

  def input_shape(self, image_size: Optional[int] = None) -> tuple:
    """(H, W, C) the model sees at `image_size` (default: the stored size)."""
    size = image_size or self.image_size
    return (size, size, self.channels)


# Listed in the order error messages and `prepare --dataset` name them.
_SPECS = (
    DatasetSpec('digits', num_classes=10, channels=1, num_train=1437, num_eval=360,
                mean=DIGITS_MEAN, std=DIGITS_STD, image_size=8, train_augment='pad_crop',
                eval_augment='resize_if_needed', preparation='builder'),
    DatasetSpec('cifar10', num_classes=10, channels=3, num_train=50_000, num_eval=10_000,
                mean=CIFAR10_MEAN, std=CIFAR10_STD, image_size=32, train_augment='pad_crop_flip',
                eval_augment='resize_if_needed'),
    DatasetSpec('cifar100', num_classes=100, channels=3, num_train=50_000, num_eval=10_000,
                mean=CIFAR100_MEAN, std=CIFAR100_STD, image_size=32, train_augment='pad_crop_flip',
                eval_augment='resize_if_needed'),
    DatasetSpec('imagenet2012', num_classes=1000, channels=3, num_train=1_281_167, num_eval=50_000,
                mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=224,
                train_augment='inception_crop', eval_augment='resize_center_crop', jpeg=True,
                in_memory=False, preparation='manual', manual_files=('ILSVRC2012_img_train.tar',
                                                                     'ILSVRC2012_img_val.tar'),
                manual_source='https://image-net.org (registration needed)',
                eval_split='validation'),
    # Generated (se_flax/data/synthetic.py): ImageNet's classes, statistics and train split size,
    # a fifth of its eval split; speed measurements and smoke runs of the whole program with
    # no data on disk and no TensorFlow.
    DatasetSpec('synthetic', num_classes=1000, channels=3, num_train=1_281_167, num_eval=10_000,
                mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=224, train_augment='none',
                eval_augment='none', preparation='none', synthetic=True),
)
DATASETS = {spec.name: spec for spec in _SPECS}
NAMES = tuple(DATASETS)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the training loop need to know about a data set."""
  name: str
  num_classes: int
  num_train: int  # examples in the train split
  num_eval: int  # examples in the eval split
  image_shape: tuple  # (H, W, C) the model sees


def steps_per_epoch(info, global_batch_size: int) -> int:
  """Global batches per pass over the train split (at least 1); `info`: a DatasetInfo or a
  DatasetSpec (the registry's split size, for planning without the data)."""
  return max(1, info.num_train // global_batch_size)


def get(name: str) -> DatasetSpec:
  """The spec of `name`; a ConfigError naming the known data sets otherwise."""
  if name not in DATASETS:
    raise ConfigError(f'config.dataset.name={name!r} is not a known data set; '
                      f'known: {list(NAMES)}')
  return DATASETS[name]


def eval_image_size(dataset_cfg) -> int:
  """The side of the evaluation crop: config.dataset.eval_image_size, 0 (or unset) meaning
  config.dataset.image_size."""
  return dataset_cfg.get('eval_image_size') or dataset_cfg.image_size


def check_config(dataset_cfg) -> DatasetSpec:
  """Checks the `config.dataset` fields that need no data; returns the data set's spec.

  The upfront config check and the input pipeline both call this, so a bad
  value fails before any I/O with the same message either way.

  Raises:
    ConfigError: unknown name, or a field value the data set cannot use.
  """
  cfg = dataset_cfg
  spec = get(cfg.name)
  for field in ('train_split', 'eval_split'):
    if not isinstance(cfg[field], str) or not cfg[field]:
      raise ConfigError(f'config.dataset.{field}={cfg[field]!r} must name a split, '
                        "e.g. 'train' or 'test[:50%]'")
  check_range('dataset.image_size', cfg.image_size, integer=True, low=0, low_open=True,
              high=MAX_IMAGE_SIZE)
  eval_size = check_range('dataset.eval_image_size', cfg.get('eval_image_size', 0), integer=True,
                          low=0, high=MAX_IMAGE_SIZE, hint='(0: config.dataset.image_size)')
  # The train fallback crop and the eval crop are both cut from the image resized to eval_resize.
  for field, crop in (('image_size', cfg.image_size), ('eval_image_size', eval_size)):
    if spec.jpeg and (not isinstance(cfg.eval_resize, int) or isinstance(cfg.eval_resize, bool)
                      or not crop <= cfg.eval_resize <= MAX_IMAGE_SIZE):
      raise ConfigError(f'config.dataset.eval_resize={cfg.eval_resize!r} must be an int >= '
                        f'config.dataset.{field}={crop} (the centre crop is taken from the '
                        'resized image)')
  if cfg.cache and not spec.in_memory:
    in_memory = [s.name for s in _SPECS if s.in_memory]
    raise ConfigError(f'config.dataset.cache=True is not supported for {cfg.name}: decoded '
                      'images differ in size and do not fit in memory; allowed for '
                      f'{", ".join(in_memory)}')
  check_range('dataset.shuffle_buffer', cfg.shuffle_buffer, integer=True, low=1, high=2 ** 31 - 1)
  check_choice('dataset.crop_sampler', cfg.get('crop_sampler', 'tf'), CROP_SAMPLERS)
  check_choice('dataset.loader', loader(cfg), LOADERS)
  area = cfg.get('crop_area_range')
  if area is not None and not (len(area) == 2 and all(_is_number(a) for a in area)
                               and 0 < area[0] <= area[1] <= 1):
    raise ConfigError(f'config.dataset.crop_area_range={tuple(area)!r} must be (min, max) '
                      'fractions of the image area with 0 < min <= max <= 1, e.g. (0.08, 1.0)')
  check_range('dataset.prefetch', cfg.prefetch, integer=True, low=0, high=2 ** 31 - 1,
              hint='(0: tuned by tf.data)')
  _check_recipe(cfg)
  return spec


def _is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def loader(dataset_cfg) -> str:
  """What reads data on disk: config.dataset.loader ('tf.data' when unset)."""
  return dataset_cfg.get('loader', next(iter(LOADERS)))


def aug_repeats(dataset_cfg) -> int:
  """Copies of each training example per epoch: config.dataset.aug_repeats (1, off, when unset)."""
  return dataset_cfg.get('aug_repeats', 1)


def _check_recipe(cfg):
  """The host-side recipe pieces: RandAugment's N, M and noise, erasing, repeated augmentation."""
  ra = cfg.get('randaugment') or {}
  # More ops than a few dozen per image is no recipe, and would take hours per epoch.
  check_range('dataset.randaugment.num_ops', ra.get('num_ops', 0), integer=True, low=0, high=100,
              hint='(0: off)')
  check_range('dataset.randaugment.magnitude', ra.get('magnitude', 0.0), low=0, high=10)
  check_range('dataset.randaugment.magnitude_std', ra.get('magnitude_std', 0.0), low=0)
  check_range('dataset.random_erasing', cfg.get('random_erasing', 0.0), low=0, high=1,
              hint='(a probability)')
  check_range('dataset.aug_repeats', aug_repeats(cfg), integer=True, low=1, high=100,
              hint='(1: off; 3 in "ResNet strikes back" A1 and A2)')


def split_size(builder, split, field_name):
  """Examples in `split` of a tfds `builder`, checking that it exists and is not empty."""
  available = ', '.join(sorted(builder.info.splits.keys()))
  try:
    size = builder.info.splits[split].num_examples
  except (KeyError, ValueError, AssertionError) as e:
    raise ConfigError(f'config.dataset.{field_name}={split!r} is not a split of {builder.name} '
                      f'({e}); its splits are: {available}') from None
  if size == 0:
    raise ConfigError(f'config.dataset.{field_name}={split!r} of {builder.name} has no examples; '
                      f'its splits are: {available}')
  return size
