"""The grain loader (config.dataset.loader='grain'): ArrayRecord files, no TensorFlow.

The same contract as se_flax/data/pipeline.py (get_info, train_batches,
eval_batches: uint8 training pixels, exact padded evaluation with a mask, the
count of undecodable images, resume at a step), over the ArrayRecord copy of
a prepared data set (`python -m se_flax.data.prepare` writes it beside the
TFRecord files), read with tfds's random-access data source and grain's
MapDataset.

Order. The training stream is a function of (config, seed) alone, not of the
number of processes:

* every example carries its index in the split's canonical order (the order
  of tfds's file instructions, the index the tf.data pipeline uses too);
* epoch e is grain's global `shuffle` of the whole train split, which grain
  reseeds from (shuffle seed, e) under `repeat`; the shuffle seed is drawn
  from the run seed;
* under repeated augmentation (config.dataset.aug_repeats = r > 1) epoch e
  keeps the first ceil(n / r) examples of its shuffle and holds each r times
  in a row, cut to the epoch's n positions (`_element`), as the tf.data
  pipeline's epochs do, but over the whole split rather than a process's slice;
* the epochs are concatenated, and global batch k is positions
  [k * B, (k + 1) * B) of that stream; process p of P takes rows
  [p * B / P, (p + 1) * B / P) of each global batch (the tf.data pipeline's
  row order: the concatenation of the processes' slices in process order);
* the augmentation of the example at a position draws from NumPy generators
  keyed by (seed, epoch, example index), copy c > 0 of a repeated example by
  (seed, epoch, example index, c): the crop and flip
  (se_flax/data/grain_augment.py), RandAugment
  (se_flax/data/grain_randaugment.py) and random erasing from one stream
  each, so that each draws the same with the others on or off.

So the state of a run is one global index, the examples it has taken (k * B
after k steps of batch B): `start_step=k`, or `start_example` (which the
loop stores with each checkpoint), starts there on any number of processes
and at any batch size, and a run stopped on P processes resumes on P', or
with another batch size, with exactly the examples an unbroken stream would
have given. No example is dropped to make the split divide among the
processes.

Undecodable JPEGs (ImageNet). The example at a position whose JPEG cannot be
decoded is replaced by the next decodable one of the same epoch's stream
(positions wrap around the epoch), augmented with that position's own key;
`skipped` counts the undecodable examples this process passed over, at each
position on its own (under repeated augmentation each copy of one counts, as
in the tf.data pipeline). Unlike the tf.data pipeline, nothing shifts: a
resumed stream stays exact after a bad record.
In evaluation an undecodable example is a masked row of zeros.
"""

import functools
import os
from typing import Iterator

from etils import epath
import grain
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from se_flax import paths
from se_flax.data import datasets
from se_flax.data import digits  # noqa: F401  # pylint: disable=unused-import  (registers the builder)
from se_flax.data import grain_augment
from se_flax.data import grain_randaugment
from se_flax.data import shard
from se_flax.errors import ConfigError
from se_flax.errors import DataError

# Distinct streams of the per-run generators, mixed with the run seed; the recipe's pieces draw
# from their own, so that the crop and flip draw the same with them as without them.
_SHUFFLE, _AUGMENT, _RECIPE, _RANDAUGMENT = 1, 3, 5, 7
# What the ArrayRecord copy is called in tfds's file formats.
FILE_FORMAT = 'array_record'
# The small data sets' train augmentations: (pad, mirror).
_PAD_CROP = {'pad_crop_flip': (4, True), 'pad_crop': (1, False)}

DatasetInfo = datasets.DatasetInfo
steps_per_epoch = datasets.steps_per_epoch


def _words(seed, *data):
  """Non-negative words for numpy's SeedSequence; the run seed may be any int."""
  return [seed % 2 ** 64, *data]


def _generator(seed, *data):
  return np.random.Generator(np.random.Philox(np.random.SeedSequence(_words(seed, *data))))


def _data_root(cfg):
  return paths.resolve_str(cfg.data_dir) if cfg.data_dir else tfds.core.constants.DATA_DIR


def _check_supported(cfg, spec):
  """Raises ConfigError for a config the grain loader does not implement."""
  sizes = {cfg.image_size, datasets.eval_image_size(cfg)}
  if not spec.jpeg and sizes != {spec.image_size}:
    raise ConfigError(f'config.dataset.loader=grain reads {spec.name} at its stored size '
                      f'{spec.image_size} only: set config.dataset.image_size and '
                      f'eval_image_size to {spec.image_size} (or 0), or use '
                      "config.dataset.loader='tf.data'")


def _open(cfg):
  """(info, builder, spec): the ArrayRecord copy of `cfg`'s data set, checked before any read.

  Raises:
    ConfigError: a bad field, an unknown or empty split, a config this loader does not run.
    DataError: missing data_dir, or the data set (or its ArrayRecord copy) not prepared.
  """
  spec = datasets.check_config(cfg)
  _check_supported(cfg, spec)
  root = _data_root(cfg)
  if cfg.data_dir is not None and not paths.is_url(cfg.data_dir) and not os.path.isdir(root):
    raise DataError(f'config.dataset.data_dir={cfg.data_dir!r} does not exist or is not a '
                    'directory; create it, or leave it unset for the tfds default '
                    f'({tfds.core.constants.DATA_DIR})')
  version_dir = epath.Path(tfds.builder(cfg.name, data_dir=root).data_dir)
  prepare = (f'`python -m se_flax.data.prepare --dataset={cfg.name} --data_dir={root}`' +
             (' with --manual_dir' if spec.preparation == 'manual' else ''))
  if not (version_dir / 'dataset_info.json').exists():
    raise DataError(f'{cfg.name} is not prepared in config.dataset.data_dir={root!r}; '
                    f'config.dataset.loader=grain reads its ArrayRecord files: run {prepare}')
  builder = tfds.builder_from_directory(version_dir)
  formats = {f.value for f in builder.info.available_file_formats()}
  if FILE_FORMAT not in formats:
    raise DataError(f'{cfg.name} in config.dataset.data_dir={root!r} has no ArrayRecord files '
                    f'(only {", ".join(sorted(formats))}), which config.dataset.loader=grain '
                    f'reads: run {prepare}, which adds them')
  info = DatasetInfo(name=cfg.name, num_classes=builder.info.features['label'].num_classes,
                     num_train=datasets.split_size(builder, cfg.train_split, 'train_split'),
                     num_eval=datasets.split_size(builder, cfg.eval_split, 'eval_split'),
                     image_shape=spec.input_shape(cfg.image_size))
  return info, builder, spec


def get_info(dataset_cfg) -> DatasetInfo:
  """Checks `config.dataset` against the ArrayRecord files and returns the data set's facts.

  Raises:
    ConfigError: unknown name, bad field value, unknown or empty split.
    DataError: missing data_dir, data set or its ArrayRecord files not prepared.
  """
  return _open(dataset_cfg)[0]


def _source(builder, spec, split):
  """tfds's random-access source of `split`: JPEGs stay bytes, PNGs are decoded by tfds."""
  decoders = {'image': tfds.decode.SkipDecoding()} if spec.jpeg else None
  return builder.as_data_source(split, decoders=decoders, file_format=FILE_FORMAT)


_IN_MEMORY = {}


def _in_memory(builder, spec, split):
  """(uint8 images, int64 labels) of a small split in canonical order, decoded once per process."""
  key = (os.fspath(builder.data_dir), repr(split))
  if key not in _IN_MEMORY:
    source = _source(builder, spec, split)
    records = [source[i] for i in range(len(source))]
    shape = (0, *spec.input_shape())
    images = np.stack([r['image'] for r in records]) if records else np.zeros(shape, np.uint8)
    labels = np.array([r['label'] for r in records], np.int64)
    _IN_MEMORY[key] = (images.astype(np.uint8), labels)
  return _IN_MEMORY[key]


def _element(order, n, copies, position):
  """(example index, copy) at global stream `position`.

  Epoch e keeps the first ceil(n / copies) examples of its shuffle
  (order[e * n:]) and holds each `copies` times in a row, cut to n positions:
  with n = 10 and 3 copies, four examples, the last one once.
  """
  epoch, offset = divmod(position, n)
  return int(order[epoch * n + offset // copies]), offset % copies


def _train_example(cfg, spec, seed, n, copies, order, read, position, element):
  """The augmented example at global stream `position`."""
  del element  # order[position]; with repeated augmentation another position's example
  epoch = position // n
  undecodable = set()
  for shift in range(n):
    # The next decodable element of the same epoch's stream stands in for an undecodable one.
    example, copy = _element(order, n, copies, epoch * n + (position + shift) % n)
    if example in undecodable:
      continue
    image, label = read(example)
    key = (epoch, example, copy) if copy else (epoch, example)
    try:
      pixels = _augment_train(cfg, spec, image, _generator(seed, _AUGMENT, *key))
    except grain_augment.UndecodableImage:
      undecodable.add(example)
      continue
    return {
        'image': _recipe(cfg, spec, seed, key, pixels),
        'label': np.int32(label),
        'index': np.int64(example),
        'skipped': np.int32(len(undecodable))
    }
  raise DataError(f'no image of {cfg.name} {cfg.train_split!r} could be decoded')


def _recipe(cfg, spec, seed, key, pixels):
  """RandAugment, then random erasing, of the uint8 crop (timm's order), each when enabled."""
  ra = cfg.get('randaugment') or {}
  if ra.get('num_ops', 0):
    pixels = grain_randaugment.rand_augment(pixels, _generator(seed, _RANDAUGMENT, *key),
                                            ra['num_ops'], float(ra.get('magnitude', 0.0)),
                                            float(ra.get('magnitude_std', 0.0)),
                                            bool(ra.get('increasing', False)))
  erasing = cfg.get('random_erasing', 0.0)
  if erasing:
    pixels = grain_augment.random_erasing(pixels, _generator(seed, _RECIPE, *key), erasing,
                                          spec.mean, spec.std)
  return pixels


def _augment_train(cfg, spec, image, rng):
  if spec.jpeg:
    area_range = tuple(cfg.get('crop_area_range') or grain_augment.CROP_AREA_RANGE)
    return grain_augment.imagenet_train(image, rng, cfg.image_size, cfg.eval_resize, area_range,
                                        cfg.get('crop_sampler', 'tf'))
  pad, flip = _PAD_CROP[spec.train_augment]
  return grain_augment.pad_crop(image, rng, pad, flip)


def _reader(builder, spec, split):
  """example index -> (stored image, label)."""
  if spec.in_memory:
    images, labels = _in_memory(builder, spec, split)
    return lambda i: (images[i], labels[i])
  if not spec.jpeg:
    source = _source(builder, spec, split)

    def read_decoded(i):
      record = source[int(i)]
      return record['image'], record['label']

    return read_decoded
  # JPEGs stay bytes: the records' bytes, parsed here: tfds's parse of every feature into NumPy costs more than
  # reading the record (0.09 against 0.05 ms for a 110 KB ImageNet example on one core).
  records = builder.as_data_source(split, file_format=FILE_FORMAT,
                                   deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)

  def read(i):
    feature = tf_example_pb2.Example.FromString(records[int(i)]).features.feature
    return feature['image'].bytes_list.value[0], feature['label'].int64_list.value[0]

  return read


def _read_options(cfg):
  return grain.ReadOptions(num_threads=shard.cores(),
                           prefetch_buffer_size=max(cfg.prefetch, shard.cores()))


def train_batches(dataset_cfg, *, global_batch_size: int, seed: int, start_step: int = 0,
                  start_example: int | None = None, process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of every global training batch, forever, from batch `start_step` on.

  Yields {'image': uint8 (B_local, H, W, C), 'label': int32 (B_local,)} with
  B_local = global_batch_size // process_count; the global batches do not
  depend on the process count (module docstring). `start_example`, when
  given, replaces `start_step`: the global stream position to start at, the
  examples the run has taken so far at whatever batch sizes it had.
  """
  cfg = dataset_cfg
  info, builder, spec = _open(cfg)
  grain_augment.resize_in_callers_thread()
  index, count = shard.process(process_index, process_count)
  local = shard.local_batch(global_batch_size, count)
  start = shard.start_position(start_step, global_batch_size, start_example)
  n = info.num_train
  shuffle_seed = int(np.random.SeedSequence(_words(seed, _SHUFFLE)).generate_state(1)[0])
  order = grain.MapDataset.range(n).shuffle(seed=shuffle_seed).repeat()
  make = functools.partial(_train_example, cfg, spec, seed, n, datasets.aug_repeats(cfg), order,
                           _reader(builder, spec, cfg.train_split))
  # Sliced after map_with_index, which keys each example by its position in the whole stream.
  batches = order.map_with_index(make)[start:].batch(local, drop_remainder=True)
  # Global batch k is local batches k * count .. k * count + count - 1, in process order.
  mine = batches[index::count]
  return _TrainIterator(mine.to_iter_dataset(_read_options(cfg)))


class _TrainIterator:
  """Numpy batches of a training stream.

  `skipped` counts the undecodable examples replaced so far; `indices` holds
  the example indices (canonical order) of the newest batch's rows.
  """

  def __init__(self, ds):
    self._it = iter(ds)
    self.skipped = 0
    self.indices = np.zeros((0,), np.int64)

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._it)
    self.skipped += int(batch.pop('skipped').sum())
    self.indices = batch.pop('index')
    return batch


def _eval_example(cfg, spec, size, read, num_real, j):
  """Row j of this process's padded eval slice: normalised float32, label, mask."""
  shape = spec.input_shape(size)
  if j < num_real:
    image, label = read(j)
    try:
      if spec.jpeg:
        pixels = grain_augment.imagenet_eval(image, size, cfg.eval_resize)
      else:
        pixels = image.astype(np.float32)
      normalised = (pixels - np.float32(spec.mean)) / np.float32(spec.std)
      return {'image': normalised, 'label': np.int32(label), 'mask': np.float32(1.0)}
    except grain_augment.UndecodableImage:
      pass
  return {'image': np.zeros(shape, np.float32), 'label': np.int32(0), 'mask': np.float32(0.0)}


def eval_batches(dataset_cfg, *, global_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One pass over the eval split, as pipeline.eval_batches: the same slices, padding and masks
  (shard.eval_layout), except that an undecodable example is a masked row in its place.

  The config and the files are checked at the call; reading starts at the first batch.
  """
  cfg = dataset_cfg
  _, builder, spec = _open(cfg)
  layout = shard.eval_layout(builder, cfg.eval_split, global_batch_size, process_index,
                             process_count)
  make = functools.partial(_eval_example, cfg, spec, datasets.eval_image_size(cfg),
                           _reader(builder, spec, layout.split), layout.num_real)
  rows = grain.MapDataset.range(layout.num_rows).map(make).batch(layout.local_batch)
  return iter(rows.to_iter_dataset(_read_options(cfg)))
