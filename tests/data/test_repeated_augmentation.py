"""Repeated augmentation (config.dataset.aug_repeats): which examples an epoch holds, their keys."""

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from se_flax.data import datasets
from se_flax.data import pipeline
from se_flax.errors import ConfigError
from tests.data.dataset_configs import dataset_config
from tests.data.test_pipeline import _assert_same
from tests.data.test_pipeline import _pixels
from tests.data.test_pipeline import _reference
from tests.data.test_pipeline import _shift_index
from tests.data.test_pipeline import _take

N = 1437  # digits train examples: 479 x 3.
COPIES = 3
MODES = [(True, 1), (False, 100)]
MODE_IDS = ['in_memory', 'streamed']


def _stream(cfg, epochs):
  """The elements {'index', 'key', ...} of the first `epochs` epochs, before any decoding."""
  _, builder, _ = pipeline._open(cfg)
  stream = pipeline._epochs(builder, cfg, 'train', N, 0, 0, 0)
  return list(stream.take(epochs * N).as_numpy_iterator())


def _expected_key(epoch, copy, index):
  if copy == 0:
    return pipeline._key(0, pipeline._AUGMENT, epoch, index).numpy()
  return pipeline._key(0, pipeline._REPEAT, epoch, copy, index).numpy()


@pytest.mark.parametrize('cache,buffer', MODES, ids=MODE_IDS)
def test_an_epoch_holds_a_third_of_the_examples_three_times_each(digits_cfg, cache, buffer):
  elements = _stream(digits_cfg(cache=cache, shuffle_buffer=buffer, aug_repeats=COPIES), 2)
  index = np.array([x['index'] for x in elements])
  subsets = []
  for epoch in range(2):
    runs = index[epoch * N:(epoch + 1) * N].reshape(-1, COPIES)
    assert (runs == runs[:, :1]).all(), 'the copies of an example are not consecutive'
    assert len(set(runs[:, 0])) == N // COPIES
    subsets.append(set(runs[:, 0]))
  assert subsets[0] <= set(range(N)) and subsets[1] <= set(range(N))
  # Each epoch draws its own subset: two random thirds share about a third of their examples.
  assert 100 < len(subsets[0] & subsets[1]) < 220


@pytest.mark.parametrize('cache,buffer', MODES, ids=MODE_IDS)
def test_each_copy_has_its_own_key(digits_cfg, cache, buffer):
  elements = _stream(digits_cfg(cache=cache, shuffle_buffer=buffer, aug_repeats=COPIES), 2)
  for position in [*range(12), N - 3, N - 2, N - 1, N, N + 1, N + 2, 2 * N - 1]:
    x = elements[position]
    expected = _expected_key(position // N, position % N % COPIES, x['index'])
    np.testing.assert_array_equal(x['key'], expected)


@pytest.mark.parametrize('cache,buffer', MODES, ids=MODE_IDS)
def test_one_copy_is_the_stream_without_the_field(digits_cfg, cache, buffer):
  unset = digits_cfg(cache=cache, shuffle_buffer=buffer)
  del unset['aug_repeats']
  one = _stream(digits_cfg(cache=cache, shuffle_buffer=buffer, aug_repeats=1), 1)
  _assert_same(one, _stream(unset, 1))
  assert sorted(x['index'] for x in one) == list(range(N))


def test_copies_are_augmented_differently(digits_cfg, digits_dir):
  cfg = digits_cfg(aug_repeats=COPIES)
  # Three batches of 479 are one epoch.
  batches = _take(pipeline.train_batches(cfg, global_batch_size=479, seed=0), 3)
  images = _pixels(np.concatenate([b['image'] for b in batches])).reshape(-1, COPIES, 8, 8, 1)
  labels = np.concatenate([b['label'] for b in batches]).reshape(-1, COPIES)
  assert (labels == labels[:, :1]).all()
  shifts = _shift_index(*_reference(digits_dir, 'train'))
  differ = 0
  for copies, label in zip(images, labels[:, 0]):
    rows = [shifts[image.tobytes(), int(label)] for image in copies]
    assert set.intersection(*rows), 'copies that are not shifts of one train image'
    differ += len({image.tobytes() for image in copies}) > 1
  # 1-pixel shifts: all three copies draw the same of 9 offsets about once in 81.
  assert differ > 440


@pytest.mark.parametrize('cache,buffer', MODES, ids=MODE_IDS)
# Batch 11 straddles epochs 0 and 1; batch 13 starts inside epoch 1 and inside a run of copies.
@pytest.mark.parametrize('start_step', [4, 11, 13])
def test_resume_with_repeats_equals_skipping_batches(digits_cfg, cache, buffer, start_step):
  cfg = digits_cfg(cache=cache, shuffle_buffer=buffer, aug_repeats=COPIES)
  whole = _take(pipeline.train_batches(cfg, global_batch_size=128, seed=0), start_step + 2)
  resumed = pipeline.train_batches(cfg, global_batch_size=128, seed=0, start_step=start_step)
  _assert_same(_take(resumed, 2), whole[start_step:])


@pytest.mark.parametrize('cache,buffer', MODES, ids=MODE_IDS)
def test_an_epoch_is_cut_to_its_length_when_the_copies_overrun_it(digits_cfg, cache, buffer):
  # Two copies of ceil(1437 / 2) = 719 examples are 1438 elements: the last one is cut.
  elements = _stream(digits_cfg(cache=cache, shuffle_buffer=buffer, aug_repeats=2), 2)
  index = np.array([x['index'] for x in elements])
  first, second = index[:N], index[N:]
  assert (first[:-1:2] == first[1::2]).all() and (second[:-1:2] == second[1::2]).all()
  assert len(set(first)) == len(set(second)) == -(-N // 2)
  # Epoch 1 starts a run of its own, keyed by epoch 1.
  np.testing.assert_array_equal(elements[N]['key'], _expected_key(1, 0, second[0]))
  np.testing.assert_array_equal(elements[N + 1]['key'], _expected_key(1, 1, second[0]))


def test_each_process_repeats_within_its_own_slice():
  # The pipeline's stream of process 1 of 2 over 1436 in-memory examples: its slice is
  # 718 = 3 x 239 + 1 examples from index 718 on, an epoch of 240 kept examples cut to 718.
  cfg = ml_collections.ConfigDict({'cache': True, 'aug_repeats': COPIES})
  stream = pipeline._epochs(None, cfg, None, 718, 718, 0, 0)
  index = np.array([int(x['index']) for x in stream.take(718).as_numpy_iterator()])
  assert set(index) <= set(range(718, 1436)) and len(set(index)) == 240
  assert (index[:717].reshape(-1, COPIES) == index[:717:COPIES, None]).all()


def test_augment_keys_of_copies_equal_the_per_example_keys():
  index = np.array([0, 5, 1436], np.int64)
  keys = pipeline._augment_keys(0, 2, tf.constant(index), COPIES).numpy()
  assert keys.shape == (3, COPIES, 2)
  for i, example in enumerate(index):
    for copy in range(COPIES):
      np.testing.assert_array_equal(keys[i, copy], _expected_key(2, copy, example))


@pytest.mark.parametrize('value', [0, -3, 2.5, True, '3'])
def test_aug_repeats_must_be_a_positive_int(value):
  cfg = dataset_config('imagenet2012', '/unused')
  with cfg.ignore_type():
    cfg.aug_repeats = value
  with pytest.raises(
      ConfigError, match=rf"^config.dataset.aug_repeats={value!r} must be an "
      r'int (>= 1|<= 100) \(1: off; 3 in "ResNet strikes back" A1 and A2\)$'):
    datasets.check_config(cfg)
  datasets.check_config(dataset_config('imagenet2012', '/unused', aug_repeats=3))
