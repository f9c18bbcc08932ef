"""The input pipeline's public interface: data set facts, train batches, eval batches.

Determinism. A training stream is a function of (config, seed, process
index/count) alone:

* every example carries a stable index, its position in the split's canonical
  order (se_flax.data.sources);
* epoch e is a permutation of the process's slice drawn from stateless RNG
  keyed by (seed, e). Small data sets held decoded in memory
  (config.dataset.cache) get a full uniform permutation. Streamed ones
  (ImageNet) read their files in a permuted order, interleaved record by
  record in a fixed round-robin, and permute each window of `shuffle_buffer`
  consecutive records; the next window is read while one is decoded, so
  stored images for two windows are held in memory;
* an example's augmentation draws from stateless RNG keyed by
  (seed, epoch, example index) (docs/design.md, "Determinism"); under
  repeated augmentation (config.dataset.aug_repeats = r > 1) each permuted
  epoch or window keeps its first 1/r, and copy c > 0 of an example is keyed
  by (seed, epoch, c, example index);
* epochs are concatenated and cut into batches (drop_remainder), and every
  map keeps its input order (`deterministic=True`), so thread timing and
  parallelism change speed only. Nothing depends on TensorFlow's global seed.

Resume. Batch k starts at position k * B_local of that stream, so
`start_step=k` starts at epoch (k * B_local) // n, where n is the size of the
process's slice, and skips the first (k * B_local) % n examples of that epoch
before anything is decoded or augmented. `start_example=s` (the examples the
run has taken, which the loop stores with each checkpoint) starts at position
s // process_count instead: the same place while the batch size stays, and
the right one after a resume with another batch size.

Undecodable JPEGs (ImageNet). A JPEG that fails to decode is dropped after
the decode-and-augment map by `Dataset.ignore_errors`; the same record fails at
the same place every time, so the stream stays deterministic. Drops are
counted from gaps in the stream positions and reported by the train
iterator's `skipped`, and in evaluation by the masks; under repeated
augmentation each copy fails, and counts, on its own. A dropped
example shifts the rest of the stream by one place, and only decoding reveals
it, so resuming stays exact up to the first drop; after k drops before the
resume point, the resumed stream runs k examples behind the uninterrupted one.
Evaluation pads every process to the same number of batches whatever is
dropped.
"""

from typing import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from se_flax.data import augment
from se_flax.data import datasets
from se_flax.data import randaugment
from se_flax.data import shard
from se_flax.data import sources
from se_flax.data.sources import traced
from se_flax.errors import ConfigError

# Distinct streams of the stateless RNG, folded into the run seed first.
_SHUFFLE, _FILE_ORDER, _AUGMENT, _REPEAT = 1, 2, 3, 4
# Folded into an example's augmentation key: RandAugment and random erasing.
_RECIPE = 1

# Plain-Python facts, defined with the registry so that the synthetic source shares them.
DatasetInfo = datasets.DatasetInfo
steps_per_epoch = datasets.steps_per_epoch


def _open(cfg):
  """(info, builder, spec) of `cfg`, checking the fields before any I/O."""
  spec = datasets.check_config(cfg)
  builder = sources.get_builder(cfg)
  info = DatasetInfo(name=cfg.name, num_classes=builder.info.features['label'].num_classes,
                     num_train=datasets.split_size(builder, cfg.train_split, 'train_split'),
                     num_eval=datasets.split_size(builder, cfg.eval_split, 'eval_split'),
                     image_shape=spec.input_shape(cfg.image_size))
  return info, builder, spec


def get_info(dataset_cfg) -> DatasetInfo:
  """Checks `config.dataset` against the data on disk and returns the data set's facts.

  A data set built here (digits) is prepared in `data_dir` when missing, one
  built from files the user provides (ImageNet's tars) too when they are in
  `manual_dir`; anything else missing raises with what to do.

  Raises:
    ConfigError: unknown name, bad field value, unknown or empty split, files in
      a format this pipeline does not read.
    DataError: missing data_dir, data set not prepared.
  """
  return _open(dataset_cfg)[0]


def _key(seed, *data):
  """A (2,) stateless seed for `data` (ints or int tensors) under the run seed."""
  key = tf.constant([seed, 0], tf.int64)
  for d in data:
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(d, tf.int64), alg='philox')
  return key


def _augment_keys(seed, epoch, index, copies=1):
  """Augmentation keys of the examples `index` (int64 (N,)) in `epoch`, in a few ops.

  (N, 2) with one copy per example: equal to _key(seed, _AUGMENT, epoch, i)
  for each i. Folding i into a key k gives (a word drawn from k alone, i), so
  the word is drawn once per epoch instead of once per example. With repeated
  augmentation, (N, copies, 2): copy 0 keeps that key, copy c > 0 gets
  _key(seed, _REPEAT, epoch, c, i).
  """
  words = []
  for copy in range(copies):
    base = _key(seed, _AUGMENT, epoch) if copy == 0 else _key(seed, _REPEAT, epoch, copy)
    words.append(
        tf.random.experimental.stateless_fold_in(base, tf.constant(0, tf.int64), alg='philox')[0])
  if copies == 1:
    return tf.stack([tf.fill(tf.shape(index), words[0]), index], axis=1)
  shape = [tf.shape(index)[0], copies]
  return tf.stack(
      [tf.broadcast_to(tf.stack(words)[None, :], shape),
       tf.broadcast_to(index[:, None], shape)], axis=-1)


def _kept(perm, copies):
  """What a permuted epoch or window keeps under repeated augmentation: its first 1/copies."""
  return perm if copies == 1 else perm[:-(-tf.shape(perm)[0] // copies)]


def _repeat_copies(ds, copies, n):
  """Each example `copies` times in a row, each copy with its own key; the first n elements.

  Repeated augmentation (Hoffer et al. 2020; "ResNet strikes back" A1 and A2):
  an epoch keeps its length n but holds ceil(n / copies) examples, each seen
  `copies` times, differently augmented, in the same or the next batch.
  """
  if copies == 1:
    return ds

  def copies_of(x):
    keys = x.pop('key')
    return tf.data.Dataset.from_tensor_slices(keys).map(lambda key: {**x, 'key': key})

  return ds.flat_map(traced(copies_of)).take(n)


def _permutation(n, key):
  """A uniformly random permutation of range(n), a function of `key` only."""
  draws = tf.random.stateless_uniform([n], key, minval=None, maxval=None, dtype=tf.int64,
                                      alg='philox')
  return tf.argsort(draws, stable=True)


def _options():
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = shard.cores()
  # Parallelism comes from mapping many examples at once, not from splitting one op.
  options.threading.max_intra_op_parallelism = 1
  # Each map runs one call per core instead (as fast on one core). The autotuner's thread
  # sleeps up to its optimisation period, which doubles to tens of seconds, and an iterator's
  # destruction waits for it: a two-process run took 20 s to exit after its last step, and a
  # preempted one as long to leave after its checkpoint (docs/performance.md).
  options.autotune.enabled = False
  return options


def _decode_stored(builder, spec, image):
  """uint8 (H, W, C) of a stored PNG (digits, CIFAR); JPEGs are decoded with their crop."""
  if image.dtype == tf.string and not spec.jpeg:
    return builder.info.features['image'].decode_example(image)
  return image


def _train_image(builder, spec, cfg, image, key):
  """uint8 pixels: the train step normalises them on the device.

  The data set's crop and flip, then the recipe's RandAugment and random
  erasing when the config enables them (`_recipe`).
  """
  image = _decode_stored(builder, spec, image)
  area_range = tuple(cfg.get('crop_area_range') or augment.CROP_AREA_RANGE)
  image = augment.TRAIN[spec.train_augment](image, key, cfg.image_size, cfg.eval_resize, area_range,
                                            cfg.get('crop_sampler', 'tf'))
  image = tf.ensure_shape(augment.to_pixels(image), spec.input_shape(cfg.image_size))
  return _recipe(spec, cfg, image, key)


def _recipe(spec, cfg, image, key):
  """RandAugment, then random erasing, of the uint8 crop (timm's order), each only when enabled.

  Their seeds come from the example's key under a stream of their own, so the
  crop and flip draw what they draw without them (defaults: bit-identical batches).
  """
  ra = cfg.get('randaugment') or {}
  num_ops, erasing = ra.get('num_ops', 0), cfg.get('random_erasing', 0.0)
  if not num_ops and not erasing:
    return image
  recipe_key = tf.random.experimental.stateless_fold_in(key, tf.constant(_RECIPE, tf.int64),
                                                        alg='philox')
  ra_key, erase_key = augment.split_seed(recipe_key, 2)
  if num_ops:
    image = randaugment.rand_augment(image, ra_key, num_ops, float(ra.get('magnitude', 0.0)),
                                     float(ra.get('magnitude_std', 0.0)),
                                     bool(ra.get('increasing', False)))
  if erasing:
    image = augment.random_erasing(image, erase_key, float(erasing), spec.mean, spec.std)
  return image


def _eval_image(builder, spec, cfg, image):
  """float32, normalised: ImageNet's antialiased resize gives values between integers."""
  size = datasets.eval_image_size(cfg)
  image = _decode_stored(builder, spec, image)
  image = augment.EVAL[spec.eval_augment](image, size, cfg.eval_resize)
  image = augment.normalize(image, spec.mean, spec.std)
  return tf.ensure_shape(image, spec.input_shape(size))


def _epochs(builder, cfg, split, n, offset, seed, first_epoch):
  """The concatenated, per-epoch shuffled stream {'index', 'key', ...} from `first_epoch` on.

  'index' is the example's position in the split's canonical order, 'key' its
  augmentation key (`_augment_keys`), both computed for a whole epoch or
  shuffle window at once. In-memory elements carry the row, not the image, so
  that skipped ones cost nothing; streamed ones carry the stored (undecoded)
  image and its label. With `aug_repeats` r > 1 each permuted epoch or window
  keeps its first 1/r and repeats each of those examples r times in a row
  (`_repeat_copies`): an epoch still has n elements.
  """
  copies = datasets.aug_repeats(cfg)
  if cfg.cache:

    def epoch(e):
      rows = _kept(_permutation(n, _key(seed, _SHUFFLE, e)), copies)
      index = tf.cast(rows, tf.int64) + offset
      return _repeat_copies(
          tf.data.Dataset.from_tensor_slices({
              'row': rows,
              'index': index,
              'key': _augment_keys(seed, e, index, copies)
          }), copies, n)
  else:
    window = min(cfg.shuffle_buffer, n)
    files = sources.num_files(builder, split)

    def epoch(e):
      order = _permutation(files, _key(seed, _FILE_ORDER, e))

      @traced
      def shuffle_window(w, window_records):
        # A whole window at a time: one permutation, one parse, one gather per field.
        index, serialized = window_records
        perm = _kept(_permutation(tf.shape(index)[0], _key(seed, _SHUFFLE, e, w)), copies)
        stored = sources.parse_stored(builder, tf.gather(serialized, perm))
        index = tf.gather(index, perm) + offset
        return {**stored, 'index': index, 'key': _augment_keys(seed, e, index, copies)}

      # The next window is read while this one is decoded: two windows of stored images in memory.
      records = sources.records(builder, split, file_order=order).batch(window).enumerate()
      return _repeat_copies(records.map(shuffle_window).prefetch(1).unbatch(), copies, n)

  # One epoch after another, as flat_map, but the next epoch is opened while this one is
  # read: its first shuffle window fills in the background instead of stalling the stream.
  return tf.data.Dataset.counter(first_epoch).interleave(traced(epoch), cycle_length=1,
                                                         block_length=1, num_parallel_calls=1,
                                                         deterministic=True)


def train_batches(dataset_cfg, *, global_batch_size: int, seed: int, start_step: int = 0,
                  start_example: int | None = None, process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """This process's slice of every training batch, forever, from batch `start_step` on.

  Yields {'image': uint8 (B_local, H, W, C) pixels, 'label': int32
  (B_local,)}; the train step normalises the pixels on the device
  (se_flax.train.step.model_input) with B_local = global_batch_size // process_count. Each process
  reads an equal, disjoint slice of the train split (the remainder of an uneven
  division is dropped). `start_example`, when given, replaces `start_step`:
  the examples the whole run has taken so far, of which this process took
  1 / process_count. See the module docstring for determinism and resume.
  """
  cfg = dataset_cfg
  _, builder, spec = _open(cfg)
  index, count = shard.process(process_index, process_count)
  batch = shard.local_batch(global_batch_size, count)
  # Each process took an equal share of the run's examples from its own slice.
  start = shard.start_position(start_step, global_batch_size, start_example) // count
  split = tfds.split_for_jax_process(cfg.train_split, process_index=index, process_count=count,
                                     drop_remainder=True)
  n = builder.info.splits[split].num_examples
  if n == 0:
    raise ConfigError(f'config.dataset.train_split={cfg.train_split!r} has fewer examples than '
                      f'processes ({count})')
  first_epoch, skip = divmod(start, n)
  ds = _epochs(builder, cfg, split, n, index * n, seed, first_epoch).skip(skip)
  if cfg.cache:
    images, labels = (tf.constant(a) for a in sources.load_in_memory(builder, split))
    stored = lambda x: (tf.gather(images, x['row']), tf.gather(labels, x['row']))
  else:
    stored = lambda x: (x['image'], x['label'])

  def preprocess(x):
    image, label = stored(x)
    return {
        'image': _train_image(builder, spec, cfg, image, x['key']),
        'label': tf.cast(label, tf.int32)
    }

  if spec.jpeg:
    # Stream positions ride along into the batch; a gap between them after
    # ignore_errors is an example dropped as undecodable (_TrainIterator counts them).
    ds = ds.enumerate(start).map(traced(lambda pos, x: {
        **preprocess(x), 'pos': pos
    }), num_parallel_calls=shard.cores(), deterministic=True)
    ds = ds.ignore_errors(log_warning=True)
  else:
    ds = ds.map(traced(preprocess), num_parallel_calls=shard.cores(), deterministic=True)
  ds = ds.batch(batch, drop_remainder=True).prefetch(cfg.prefetch or tf.data.AUTOTUNE)
  return _TrainIterator(ds.with_options(_options()), start)


class _TrainIterator:
  """Numpy batches of a training stream; `skipped` counts the examples it dropped."""

  def __init__(self, ds, start):
    self._it = ds.as_numpy_iterator()
    self._next_pos = start  # The stream position the next example has when none is dropped.
    self.skipped = 0

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._it)
    if 'pos' in batch:
      pos = batch.pop('pos')
      dropped = int(pos[-1]) + 1 - self._next_pos - len(pos)
      self._next_pos = int(pos[-1]) + 1
      self.skipped += dropped
    return batch


def eval_batches(dataset_cfg, *, global_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One pass over the eval split: this process's slice, padded, in fixed order.

  Yields {'image' float32 normalised, 'label', 'mask'}; 'mask' is 1.0 for real examples and 0.0
  for the zero padding of the last batches. Which examples each process gets
  and how many batches every process yields: shard.eval_layout. Every example
  is seen exactly once across processes; an undecodable one is dropped, and
  the padding after this process's examples grows by one row.
  """
  cfg = dataset_cfg
  _, builder, spec = _open(cfg)
  layout = shard.eval_layout(builder, cfg.eval_split, global_batch_size, process_index,
                             process_count)
  if cfg.cache:
    images, labels = sources.load_in_memory(builder, layout.split)
    ds = tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels})
  else:
    ds = sources.read(builder, layout.split, decode_image=False)

  def preprocess(x):
    return {
        'image': _eval_image(builder, spec, cfg, x['image']),
        'label': tf.cast(x['label'], tf.int32),
        'mask': tf.constant(1.0, tf.float32)
    }

  ds = ds.map(traced(preprocess), num_parallel_calls=shard.cores(), deterministic=True)
  if spec.jpeg:
    ds = ds.ignore_errors(log_warning=True)
  padding = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), ds.element_spec)
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat())
  ds = ds.take(layout.num_rows).batch(layout.local_batch)
  ds = ds.prefetch(cfg.prefetch or tf.data.AUTOTUNE)
  return _eval_iterator(ds.with_options(_options()))


def _eval_iterator(ds):
  # A generator, so that nothing starts reading before the first batch is asked for.
  yield from ds.as_numpy_iterator()
