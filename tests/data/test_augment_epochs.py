"""The training crop of an example is a function of (seed, epoch, example index) alone.

Each augmented digit is traced back to its train row and its crop offset by
matching it against every 1-pixel shift of every train image (numpy), so the
test sees which crop each example got in each epoch, whatever the order the
stream delivered it in.
"""

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

from se_flax.data import datasets
from se_flax.data import pipeline
from tests.data.dataset_configs import dataset_config

NUM_TRAIN = 1437
BATCH = 479  # 1437 = 3 x 479: three batches are one epoch.
EPOCHS = 3


def _pixels(images):
  """uint8 pixels of train images, whether the stream gives them as pixels or normalised."""
  if images.dtype == np.uint8:
    return images
  mean, std = datasets.DIGITS_MEAN[0], datasets.DIGITS_STD[0]
  return np.round(np.asarray(images, np.float64) * std + mean).astype(np.uint8)


@pytest.fixture(scope='module')
def shifts(digits_dir):
  """(pixels, label) -> {(row, (dy, dx))} over every 1-pixel zero-padded crop of each train image."""
  builder = tfds.builder('digits', data_dir=digits_dir)
  data = tfds.as_numpy(builder.as_dataset('train', batch_size=-1))
  padded = np.pad(data['image'], [(0, 0), (1, 1), (1, 1), (0, 0)])
  index = collections.defaultdict(set)
  for dy in range(3):
    for dx in range(3):
      for row, (image, label) in enumerate(zip(padded[:, dy:dy + 8, dx:dx + 8], data['label'])):
        index[image.tobytes(), int(label)].add((row, (dy, dx)))
  return index


def _crops(cfg, shifts, seed):
  """{(epoch, row): offsets} of the first EPOCHS epochs, for images that name one train row."""
  stream = pipeline.train_batches(cfg, global_batch_size=BATCH, seed=seed)
  images, labels = [], []
  for _ in range(EPOCHS * NUM_TRAIN // BATCH):
    batch = next(stream)
    images.append(_pixels(batch['image']))
    labels.append(batch['label'])
  crops = {}
  for position, (image, label) in enumerate(zip(np.concatenate(images), np.concatenate(labels))):
    found = shifts[image.tobytes(), int(label)]
    assert found, f'example {position} is not a 1-pixel crop of a train image of its class'
    rows = {row for row, _ in found}
    if len(rows) == 1:  # Duplicate digits in the train split cannot be told apart.
      crops[position // NUM_TRAIN, rows.pop()] = frozenset(offset for _, offset in found)
  assert len(crops) > 0.9 * EPOCHS * NUM_TRAIN
  return crops


@pytest.fixture(scope='module')
def in_memory(digits_dir, shifts):
  return _crops(dataset_config('digits', digits_dir, cache=True), shifts, seed=5)


def _same_fraction(a, b, a_epoch, b_epoch):
  rows = [row for e, row in a if e == a_epoch and (b_epoch, row) in b]
  assert len(rows) > 1000
  return np.mean([a[a_epoch, row] == b[b_epoch, row] for row in rows])


@pytest.mark.parametrize('first,second', [(0, 1), (1, 2), (0, 2)])
def test_every_epoch_draws_new_crops(in_memory, first, second):
  # One of 9 offsets: about 1/9 of the rows keep their crop by chance, not all of them.
  assert _same_fraction(in_memory, in_memory, first, second) < 0.3


def test_same_seed_epoch_and_index_give_the_same_crop_in_any_order(in_memory, digits_dir, shifts):
  # The streamed reader delivers each epoch in another order than the in-memory one;
  # the crop follows the example, not its position in the stream.
  streamed = _crops(dataset_config('digits', digits_dir, cache=False, shuffle_buffer=100), shifts,
                    seed=5)
  order = lambda crops: [row for e, row in crops if e == 0]
  assert order(streamed) != order(in_memory)
  for epoch in range(EPOCHS):
    assert _same_fraction(in_memory, streamed, epoch, epoch) == 1.0


def test_another_seed_draws_other_crops(in_memory, digits_dir, shifts):
  other = _crops(dataset_config('digits', digits_dir, cache=True), shifts, seed=6)
  assert _same_fraction(in_memory, other, 0, 0) < 0.3
