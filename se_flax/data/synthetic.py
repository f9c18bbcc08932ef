"""Generated batches of the synthetic data set (DatasetSpec.synthetic): no files, no TensorFlow.

For speed measurements of the step and the loop, and smoke runs of the whole
program on a machine without data: the images have the data set's shape and
the model's size (config.dataset.image_size), the labels its classes. Each run
draws a pool of `POOL` random images from its seed; example i of the pool has
label i % num_classes, so a model can fit them. Batch k picks its rows of the
pool from a generator keyed by (seed, k) alone, so a stream restarted at batch
k (exact resume) and every process of a multi-process run see the same global
batch; each process yields its own slice of it. Training images are uint8
pixels, evaluation images float32 normalised, as the tf.data pipeline gives
them (se_flax/data/pipeline.py).
"""

from typing import Iterator

import numpy as np

from se_flax.data import datasets
from se_flax.data import shard

POOL = 64
_EVAL_SEED = 0
_IMAGES, _ROWS = 0, 1  # distinct generator streams


def _generator(*words):
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(words))))


def _spec(cfg):
  spec = datasets.check_config(cfg)
  if not spec.synthetic:
    raise ValueError(f'{cfg.name} is not a synthetic data set')
  return spec


def get_info(dataset_cfg) -> datasets.DatasetInfo:
  """The facts of the synthetic data set at config.dataset.image_size."""
  spec = _spec(dataset_cfg)
  return datasets.DatasetInfo(name=spec.name, num_classes=spec.num_classes,
                              num_train=spec.num_train, num_eval=spec.num_eval,
                              image_shape=spec.input_shape(dataset_cfg.image_size))


def _pool(spec, image_size, seed):
  """uint8 (POOL, H, W, C) images and int32 (POOL,) labels, a function of the seed."""
  shape = (POOL,) + spec.input_shape(image_size)
  images = _generator(seed, _IMAGES).integers(0, 256, size=shape, dtype=np.uint8)
  return images, (np.arange(POOL) % spec.num_classes).astype(np.int32)


def _rows(process_index, process_count, global_batch_size):
  """This process's rows of every global batch."""
  index, count = shard.process(process_index, process_count)
  local = shard.local_batch(global_batch_size, count)
  return slice(index * local, (index + 1) * local)


class _TrainIterator:
  """uint8 training batches from batch `start_step` on, forever; nothing is ever dropped."""
  skipped = 0

  def __init__(self, images, labels, seed, start_step, global_batch_size, rows):
    self._images, self._labels = images, labels
    self._seed, self._step = seed, start_step
    self._global, self._rows = global_batch_size, rows

  def __iter__(self):
    return self

  def __next__(self):
    picks = _generator(self._seed, _ROWS, self._step).integers(0, POOL, self._global)[self._rows]
    self._step += 1
    return {'image': self._images[picks], 'label': self._labels[picks]}


def train_batches(dataset_cfg, *, global_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """This process's slice of every training batch from batch `start_step` on (see the module)."""
  spec = _spec(dataset_cfg)
  if start_step < 0:
    raise ValueError(f'start_step={start_step} must be >= 0')
  rows = _rows(process_index, process_count, global_batch_size)
  images, labels = _pool(spec, dataset_cfg.image_size, seed)
  return _TrainIterator(images, labels, seed, start_step, global_batch_size, rows)


def eval_batches(dataset_cfg, *, global_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One pass over the num_eval examples: example j is pool image j % POOL; padded and masked.

  Every process yields ceil(num_eval / global batch) batches, its slice of each,
  at config.dataset.eval_image_size (0: image_size).
  """
  spec = _spec(dataset_cfg)
  rows = _rows(process_index, process_count, global_batch_size)
  size = datasets.eval_image_size(dataset_cfg)
  images, labels = _pool(spec, size, _EVAL_SEED)
  normalised = (images.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)
  for start in range(0, spec.num_eval, global_batch_size):
    index = np.arange(start, start + global_batch_size)[rows]
    real = index < spec.num_eval
    picks = index % POOL
    yield {
        'image': np.where(real[:, None, None, None], normalised[picks], 0.0).astype(np.float32),
        'label': np.where(real, labels[picks], 0).astype(np.int32),
        'mask': real.astype(np.float32)
    }
