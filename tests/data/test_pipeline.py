"""Train and eval batches of digits: determinism, resume, coverage, process slices."""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from se_flax.data import datasets
from se_flax.data import pipeline
from se_flax.data import shard
from tests.data.dataset_configs import dataset_config

GLOBAL_BATCH = 128  # 1437 train examples: epochs end inside batches 11 and 22.
NUM_BATCHES = 26


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def _pixels(images):
  """Train pixels (uint8) as they are; normalised eval digits back to uint8 0..255."""
  if images.dtype == np.uint8:
    return images
  mean, std = datasets.DIGITS_MEAN[0], datasets.DIGITS_STD[0]
  return np.round(np.asarray(images, np.float64) * std + mean).astype(np.uint8)


def _reference(digits_dir, split):
  """(images, labels) of a split or sub-split as tfds's own reader returns them."""
  builder = tfds.builder('digits', data_dir=digits_dir)
  data = tfds.as_numpy(builder.as_dataset(split, batch_size=-1))
  return data['image'], data['label']


def _shift_index(images, labels):
  """Maps (pixels, label) of every 1-pixel zero-padded shift of each image to its rows."""
  index = collections.defaultdict(set)
  padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)])
  for dy in range(3):
    for dx in range(3):
      for row, (image, label) in enumerate(zip(padded[:, dy:dy + 8, dx:dx + 8], labels)):
        index[image.tobytes(), int(label)].add(row)
  return index


@pytest.fixture(scope='module', params=[True, False], ids=['in_memory', 'streamed'])
def reference(request, digits_dir):
  cfg = dataset_config('digits', digits_dir, cache=request.param, shuffle_buffer=500)
  batches = _take(pipeline.train_batches(cfg, global_batch_size=GLOBAL_BATCH, seed=0), NUM_BATCHES)
  return cfg, batches


def test_batch_format(reference):
  cfg, batches = reference
  assert pipeline.get_info(cfg).image_shape == (8, 8, 1)
  for batch in batches:
    assert set(batch) == {'image', 'label'}
    assert batch['image'].shape == (GLOBAL_BATCH, 8, 8, 1) and batch['image'].dtype == np.uint8
    assert batch['label'].shape == (GLOBAL_BATCH,) and batch['label'].dtype == np.int32


def test_same_seed_gives_identical_batches(reference):
  cfg, batches = reference
  again = _take(pipeline.train_batches(cfg, global_batch_size=GLOBAL_BATCH, seed=0), NUM_BATCHES)
  _assert_same(batches, again)


def test_threads_and_tf_global_seed_change_nothing(reference, monkeypatch):
  cfg, batches = reference
  make_options = pipeline._options

  def one_thread():
    options = make_options()
    options.threading.private_threadpool_size = 1
    return options

  monkeypatch.setattr(pipeline, '_options', one_thread)
  tf.random.set_seed(1234)
  try:
    again = _take(pipeline.train_batches(cfg, global_batch_size=GLOBAL_BATCH, seed=0), NUM_BATCHES)
  finally:
    tf.random.set_seed(None)
  _assert_same(batches, again)


def test_one_call_per_core_and_no_autotuner():
  # The autotuner's thread sleeps up to its optimisation period (tens of seconds late in a run),
  # and destroying an iterator waits for it: a two-process run took 20 s to exit after its last
  # step. Maps use the process's CPU set, which a scheduler narrows, not the machine's cores.
  options = pipeline._options()  # pylint: disable=protected-access
  assert options.autotune.enabled is False
  assert options.threading.private_threadpool_size == len(os.sched_getaffinity(0))
  assert shard.cores() == len(os.sched_getaffinity(0))


def test_other_seed_gives_other_batches(reference):
  cfg, batches = reference
  other = _take(pipeline.train_batches(cfg, global_batch_size=GLOBAL_BATCH, seed=1), 2)
  assert not np.array_equal(other[0]['label'], batches[0]['label'])
  assert not np.array_equal(other[1]['image'], batches[1]['image'])


def test_epochs_are_shuffled_differently(reference):
  _, batches = reference
  labels = np.concatenate([b['label'] for b in batches])
  assert not np.array_equal(labels[:1437], labels[1437:2874])


# Batch 11 straddles epochs 0 and 1, batch 22 epochs 1 and 2.
@pytest.mark.parametrize('start_step', [1, 11, 22])
def test_resume_equals_skipping_batches(reference, start_step):
  cfg, batches = reference
  resumed = pipeline.train_batches(cfg, global_batch_size=GLOBAL_BATCH, seed=0,
                                   start_step=start_step)
  _assert_same(_take(resumed, 3), batches[start_step:start_step + 3])


def _rows(batches):
  return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


# Resumed after 5 batches of 128 (640 examples) at another global batch: 640 + 4 x 96 crosses the
# end of the first epoch (1437).
@pytest.mark.parametrize('count', [1, 2])
def test_resume_at_another_batch_size_continues_at_the_examples_taken(reference, count):
  cfg, batches = reference
  taken, batch, steps = 5 * GLOBAL_BATCH, 96, 4
  for index in range(count):
    # This process's rows of the unbroken run, in the order of its own stream.
    own = batches if count == 1 else _take(
        pipeline.train_batches(cfg, global_batch_size=GLOBAL_BATCH, seed=0, process_index=index,
                               process_count=count), NUM_BATCHES)
    expected = _rows(own)
    resumed = pipeline.train_batches(cfg, global_batch_size=batch, seed=0, start_step=5,
                                     start_example=taken, process_index=index, process_count=count)
    got = _rows(_take(resumed, steps))
    start = taken // count
    for key in got:
      np.testing.assert_array_equal(got[key], expected[key][start:start + steps * batch // count])


@pytest.mark.parametrize('cache,buffer', [(True, 1), (False, 100), (False, 5000)])
def test_an_epoch_is_every_train_example_once_augmented(digits_cfg, digits_dir, cache, buffer):
  cfg = digits_cfg(cache=cache, shuffle_buffer=buffer)
  # 1437 = 3 x 479: three batches are exactly one epoch.
  batches = _take(pipeline.train_batches(cfg, global_batch_size=479, seed=3), 3)
  images = _pixels(np.concatenate([b['image'] for b in batches]))
  labels = np.concatenate([b['label'] for b in batches])
  train_images, train_labels = _reference(digits_dir, 'train')
  assert sorted(labels.tolist()) == sorted(train_labels.tolist())
  shifts = _shift_index(train_images, train_labels)
  sources = [shifts.get((image.tobytes(), int(label))) for image, label in zip(images, labels)]
  assert all(sources), 'an image is not a 1-pixel shift of a train image of its class'
  shifted = sum(not np.array_equal(i, train_images[min(s)]) for i, s in zip(images, sources))
  assert shifted > 1000  # 8 of 9 offsets move the image.


def test_two_processes_read_disjoint_slices(digits_cfg, digits_dir):
  cfg = digits_cfg()
  slices = [
      _reference(
          digits_dir,
          tfds.split_for_jax_process('train', process_index=p, process_count=2,
                                     drop_remainder=True)) for p in range(2)
  ]
  shifts = [_shift_index(*s) for s in slices]
  for p in range(2):
    # Global batch 718 -> 359 per process; 2 batches are one epoch of the 718-example slice.
    batches = _take(
        pipeline.train_batches(cfg, global_batch_size=718, seed=0, process_index=p,
                               process_count=2), 2)
    assert all(b['image'].shape == (359, 8, 8, 1) for b in batches)
    labels = np.concatenate([b['label'] for b in batches])
    assert sorted(labels.tolist()) == sorted(slices[p][1].tolist())
    keys = [(i.tobytes(), int(l))
            for i, l in zip(_pixels(np.concatenate([b['image'] for b in batches])), labels)]
    assert all(k in shifts[p] for k in keys)
    assert sum(k not in shifts[1 - p] for k in keys) > 600  # Most are in no other slice.


def test_global_batch_must_divide_among_processes(digits_cfg):
  with pytest.raises(ValueError, match='global_batch_size=9'):
    pipeline.train_batches(digits_cfg(), global_batch_size=9, seed=0, process_index=0,
                           process_count=2)


def test_steps_per_epoch():
  info = pipeline.DatasetInfo('digits', 10, 1437, 360, (8, 8, 1))
  assert pipeline.steps_per_epoch(info, 128) == 11
  assert pipeline.steps_per_epoch(info, 4096) == 1


def _eval_examples(batches):
  """(pixels, label) of every real example, and checks on the padding."""
  rows = []
  for batch in batches:
    assert set(batch) == {'image', 'label', 'mask'} and batch['mask'].dtype == np.float32
    real = batch['mask'] == 1.0
    assert np.all(batch['image'][~real] == 0) and np.all(batch['label'][~real] == 0)
    rows += [
        (i.tobytes(), int(l)) for i, l in zip(_pixels(batch['image'][real]), batch['label'][real])
    ]
  return rows


@pytest.mark.parametrize('cache', [True, False])
def test_eval_sees_every_example_once(digits_cfg, digits_dir, cache):
  batches = list(pipeline.eval_batches(digits_cfg(cache=cache), global_batch_size=128))
  assert len(batches) == 3 and all(b['image'].shape == (128, 8, 8, 1) for b in batches)
  assert sum(b['mask'].sum() for b in batches) == 360
  images, labels = _reference(digits_dir, 'test')
  assert sorted(_eval_examples(batches)) == sorted(
      (i.tobytes(), int(l)) for i, l in zip(images, labels))
  again = list(pipeline.eval_batches(digits_cfg(cache=cache), global_batch_size=128))
  _assert_same(batches, again)


@pytest.mark.parametrize(
    'split,global_batch,num_batches,cache',
    [
        ('test', 64, 6, True),  # 180 + 180
        ('test[:61]', 20, 4, False),  # 31 + 30: the second process pads a whole batch
        ('test[:1]', 4, 1, True),  # 1 + 0: the second process yields one all-padding batch
        ('test[:1]', 4, 1, False),
    ])
def test_eval_two_processes(digits_cfg, digits_dir, split, global_batch, num_batches, cache):
  cfg = digits_cfg(eval_split=split, cache=cache)
  per_process = [
      list(
          pipeline.eval_batches(cfg, global_batch_size=global_batch, process_index=p,
                                process_count=2)) for p in range(2)
  ]
  assert [len(b) for b in per_process] == [num_batches, num_batches]
  images, labels = _reference(digits_dir, split)
  examples = _eval_examples(per_process[0]) + _eval_examples(per_process[1])
  assert sorted(examples) == sorted((i.tobytes(), int(l)) for i, l in zip(images, labels))


def test_image_size_other_than_stored(digits_cfg):
  cfg = digits_cfg(image_size=16)
  assert pipeline.get_info(cfg).image_shape == (16, 16, 1)
  assert next(pipeline.train_batches(cfg, global_batch_size=4,
                                     seed=0))['image'].shape == (4, 16, 16, 1)
  assert next(pipeline.eval_batches(cfg, global_batch_size=4))['image'].shape == (4, 16, 16, 1)


def test_augment_keys_of_a_window_equal_the_per_example_keys():
  # The keys are drawn for a whole epoch or window at once; each must be the
  # key the example would get alone, so that crops do not depend on batching.
  index = np.array([0, 1, 7, 1436, 2 ** 40], np.int64)
  for seed, epoch in ((0, 0), (3, 2), (12345, 17)):
    together = pipeline._augment_keys(seed, epoch, tf.constant(index)).numpy()
    alone = [pipeline._key(seed, pipeline._AUGMENT, epoch, i).numpy() for i in index]
    np.testing.assert_array_equal(together, np.stack(alone))
  different = pipeline._augment_keys(0, 1, tf.constant(index)).numpy()
  assert not (different == pipeline._augment_keys(0, 0, tf.constant(index)).numpy()).all()
