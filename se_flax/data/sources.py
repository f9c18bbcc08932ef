"""Where examples come from: tfds builders, the checks on them, and ordered readers.

Records are read straight from the files tfds wrote, through the split's
`file_instructions` (the low-level reading path tfds documents), so that every
example gets a stable index: its position in the split's canonical order.
That index, not the order in which threads deliver records, is what shuffling
and augmentation are keyed on.
"""

import os

from absl import logging
from etils import epath
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from se_flax import data as data_lib
from se_flax import paths
from se_flax.data import datasets
from se_flax.data import digits  # noqa: F401  # pylint: disable=unused-import  (registers the builder)
from se_flax.data import shard
from se_flax.errors import ConfigError
from se_flax.errors import DataError


def field(name):
  """The config path of a dataset field, as error messages name it."""
  return f'config.dataset.{name}'


def data_root(cfg):
  """The tfds data directory the config points at (tfds's default when unset)."""
  return paths.resolve_str(cfg.data_dir) if cfg.data_dir else tfds.core.constants.DATA_DIR


def get_builder(cfg):
  """Returns the prepared tfds builder of `cfg.name`, preparing it here when its spec allows.

  Raises:
    ConfigError: unknown name, or files in a format this reader does not read.
    DataError: `data_dir` missing, or the data set not prepared in it and not
      preparable here.
  """
  # Before tfds starts TensorFlow's runtime: the accelerators belong to JAX alone.
  data_lib.hide_gpus_from_tensorflow()
  spec = datasets.get(cfg.name)
  # An object store has no directories to check: a missing prefix shows as unprepared data.
  if (cfg.data_dir is not None and not paths.is_url(cfg.data_dir)
      and not paths.resolve(cfg.data_dir).is_dir()):
    raise DataError(f'{field("data_dir")}={cfg.data_dir!r} does not exist or is not a '
                    'directory; create it, or leave it unset for the tfds default '
                    f'({tfds.core.constants.DATA_DIR})')
  builder = tfds.builder(cfg.name, data_dir=data_root(cfg))
  if not builder.is_prepared():
    _PREPARE[spec.preparation](builder, cfg, spec)
  if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
    raise ConfigError(f'{cfg.name} in {field("data_dir")}={data_root(cfg)!r} is stored as '
                      f'{builder.info.file_format.value}; this pipeline reads tfrecord files '
                      f'(`tfds build {cfg.name} --file_format=tfrecord`)')
  return builder


def _prepare_with_builder(builder, cfg, spec):
  """A data set whose builder needs nothing from outside (digits): prepared here."""
  logging.info('Preparing the %s data set in %s.', spec.name, data_root(cfg))
  builder.download_and_prepare()


def _explain_download(builder, cfg, spec):
  """A data set that needs the network: prepared elsewhere, then copied here."""
  raise DataError(
      f'{field("name")}={cfg.name!r} is not prepared in {field("data_dir")}={data_root(cfg)!r}: '
      f'expected {builder.data_dir}/dataset_info.json and {cfg.name}-{spec.train_split}'
      f'.tfrecord-* / {cfg.name}-{spec.eval_split}.tfrecord-* files there. This pipeline does '
      f'not download; on a machine with network access run `python -m se_flax.data.prepare '
      f'--dataset={cfg.name} --data_dir=DIR` and copy '
      f'DIR/{cfg.name}/{builder.version} to {builder.data_dir}')


def _prepare_from_manual_files(builder, cfg, spec):
  """A data set built from files the user provides (ImageNet's tars) in manual_dir."""
  root = data_root(cfg)
  manual_dir = (paths.resolve_str(cfg.manual_dir) if cfg.manual_dir else os.fspath(
      epath.Path(root) / 'downloads' / 'manual'))
  missing = [f for f in spec.manual_files if not (epath.Path(manual_dir) / f).is_file()]
  prepare = (f'`python -m se_flax.data.prepare --dataset={cfg.name} --data_dir={root} '
             f'--manual_dir={manual_dir}`')
  if missing:
    where = (f'{field("manual_dir")}={cfg.manual_dir!r}' if cfg.manual_dir else
             f'{manual_dir} (the default when {field("manual_dir")} is unset)')
    raise DataError(
        f'{cfg.name} is not prepared in {field("data_dir")}={root!r} and {", ".join(missing)} '
        f'is missing from {where}. Download {" and ".join(spec.manual_files)} from '
        f'{spec.manual_source}, put both in {manual_dir} (or point {field("manual_dir")} at '
        f'their directory), and run again or {prepare}')
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    raise DataError(f'{cfg.name} is not prepared in {field("data_dir")}={root!r}; prepare it '
                    f'once, before a multi-process run: {prepare}')
  logging.info('Preparing %s in %s from %s; this reads the full archives.', cfg.name, root,
               manual_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


# datasets.DatasetSpec.preparation -> what to do when the data set is not prepared.
_PREPARE = {
    'builder': _prepare_with_builder,
    'download': _explain_download,
    'manual': _prepare_from_manual_files,
}


def _instructions(builder, split):
  """(filename, skip, take, first index) per file the split reads, in canonical order."""
  rows = [fi for fi in builder.info.splits[split].file_instructions if fi.take > 0]
  takes = np.array([fi.take for fi in rows], np.int64)
  return {
      'filename': tf.constant([os.fspath(fi.filename) for fi in rows], tf.string),
      'skip': tf.constant([fi.skip for fi in rows], tf.int64),
      'take': tf.constant(takes),
      'start': tf.constant(np.cumsum(takes) - takes),
  }


def num_files(builder, split):
  return len([fi for fi in builder.info.splits[split].file_instructions if fi.take > 0])


def traced(fn):
  """`fn`, for a tf.data transformation, traced as written instead of through autograph.

  The input pipeline branches with tf.cond, tf.where and tf.switch_case, never
  with Python control flow on tensors, so autograph's rewrite of the source
  changes nothing; skipping it saves about 0.7 s of CPU each time a process
  builds its digits pipelines, more for ImageNet's.
  """
  return tf.autograph.experimental.do_not_convert(fn)


def records(builder, split, *, file_order=None, cycle_length=16):
  """(index, serialized record) of `split` as a deterministic tf.data stream.

  Args:
    builder: a prepared tfds builder.
    split: a split, or a sub-split such as tfds.even_splits returns.
    file_order: optional int tensor, a permutation of the split's files; files
      are read in this order instead of the canonical one.
    cycle_length: files read at once; records are interleaved one by one in a
      fixed round-robin, so the order depends only on `file_order`.

  Returns:
    A tf.data.Dataset; the index is the example's position in the split's
    canonical order, whatever order the files are read in.
  """
  table = _instructions(builder, split)
  files = tf.data.Dataset.from_tensor_slices(table)
  if file_order is not None:
    files = tf.data.Dataset.from_tensor_slices(file_order).map(
        traced(lambda i: tf.nest.map_structure(lambda column: tf.gather(column, i), table)))

  @traced
  def file_records(row):
    ds = tf.data.TFRecordDataset(row['filename']).skip(row['skip']).take(row['take'])
    return ds.enumerate(row['start'])

  # Reading waits on storage more than on a CPU: every open file gets its own thread.
  cycle = max(1, min(cycle_length, num_files(builder, split)))
  return files.interleave(file_records, cycle_length=cycle, block_length=1,
                          num_parallel_calls=cycle, deterministic=True)


def read(builder, split, *, decode_image, file_order=None, cycle_length=16):
  """Examples {'index', 'image', 'label'} of `split`, parsed one by one (see `records`).

  decode_image: False keeps the stored image bytes (JPEG, decoded later
  together with the crop); True decodes to uint8.
  """
  features = builder.info.features
  decoders = None if decode_image else {'image': tfds.decode.SkipDecoding()}

  @traced
  def parse(index, record):
    example = features.deserialize_example(record, decoders=decoders)
    return {'index': index, 'image': example['image'], 'label': example['label']}

  ds = records(builder, split, file_order=file_order, cycle_length=cycle_length)
  return ds.map(parse, num_parallel_calls=shard.cores(), deterministic=True)


def parse_stored(builder, serialized):
  """{'image': stored bytes, 'label'} of a 1-D batch of serialized records, in one parse.

  What `read(..., decode_image=False)` gives record by record, for a whole
  shuffle window at once: one op instead of one per record.
  """
  spec = builder.info.features.tf_example_spec
  return tf.io.parse_example(serialized, {k: spec[k] for k in ('image', 'label')})


_IN_MEMORY = {}


def load_in_memory(builder, split):
  """(images uint8 (N, H, W, C), labels int64 (N,)) of `split`, in canonical order.

  Decoded once per process and kept, so that every epoch and every evaluation
  reuses the same arrays (config.dataset.cache).
  """
  key = (os.fspath(builder.data_dir), repr(split))
  if key not in _IN_MEMORY:
    ds = read(builder, split, decode_image=True)
    arrays = {k: [] for k in ('index', 'image', 'label')}
    for batch in ds.batch(4096).as_numpy_iterator():
      for k in arrays:
        arrays[k].append(batch[k])
    if not arrays['index']:  # An empty process slice of a small eval split.
      shape = builder.info.features['image'].shape
      _IN_MEMORY[key] = (np.zeros((0, *shape), np.uint8), np.zeros((0,), np.int64))
      return _IN_MEMORY[key]
    arrays = {k: np.concatenate(v) for k, v in arrays.items()}
    order = np.argsort(arrays['index'], kind='stable')
    _IN_MEMORY[key] = (arrays['image'][order], arrays['label'][order].astype(np.int64))
  return _IN_MEMORY[key]
