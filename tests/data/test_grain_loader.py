"""The grain loader (config.dataset.loader='grain') on the ArrayRecord copy of digits.

The order of examples is compared across real processes reading as process i
of n (tests/data/grain_worker.py); the examples and evaluation batches against
tfds's own data source and the tf.data pipeline.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from se_flax.data import feed
from se_flax.data import grain_augment
from se_flax.data import grain_randaugment
from se_flax.data import grain_source
from se_flax.data import prepare
from se_flax.errors import ConfigError
from se_flax.errors import DataError
from tests.data import grain_worker
from tests.data.dataset_configs import dataset_config

# One worker prepares the ArrayRecord copy once for every test here.
pytestmark = pytest.mark.xdist_group('grain_digits')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 35 global batches of 48 cross the end of the first epoch (1437 examples) at step 29.
STEPS = 35
# Where the 2-process run stops and a 4-process run takes over; then 4 -> 1.
TO_FOUR, TO_ONE = 13, 31


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('grain_digits')
  assert prepare.main(['--dataset=digits', f'--data_dir={root}']) == 0
  return str(root)


def _cfg(data_dir, **overrides):
  return dataset_config('digits', data_dir, **{'loader': 'grain', **overrides})


def _source(data_dir, split):
  """tfds's own random-access reading of the split, the reference for indices and labels."""
  builder = tfds.builder_from_directory(os.path.join(data_dir, 'digits', '1.0.0'))
  return builder.as_data_source(split, file_format='array_record')


def _run_groups(data_dir, tmp_path, groups):
  """{(count, start, steps): global batches} from `count` worker processes per group, all at once.

  A global batch is the concatenation of the processes' rows in process order.
  """
  env = {**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu'}
  config = json.dumps(_cfg(data_dir).to_dict())
  procs = {}
  for count, start, steps in groups:
    for index in range(count):
      out = tmp_path / f'{count}_{start}_{index}.json'
      args = [config, index, count, start, steps, out]
      procs[(count, start, steps,
             index)] = (out,
                        subprocess.Popen(
                            [sys.executable, '-m', 'tests.data.grain_worker', *map(str, args)],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True))
  seen = {}
  for key, (out, proc) in procs.items():
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    seen[key] = json.loads(out.read_text())
  batches = {}
  for count, start, steps in groups:
    parts = [seen[(count, start, steps, i)] for i in range(count)]
    assert not any(p['tensorflow'] for p in parts)
    batches[(count, start, steps)] = {
        field: [sum((p[field][k] for p in parts), []) for k in range(steps)]
        for field in ('indices', 'labels')
    }
  return batches


def test_global_batches_do_not_depend_on_the_process_count_and_resume_on_another(
    data_dir, tmp_path):
  # An unbroken run on 1 and on 2 processes; a run stopped on 2 processes after TO_FOUR
  # steps, resumed on 4, stopped after TO_ONE and resumed on 1.
  groups = [(1, 0, STEPS), (2, 0, STEPS), (4, TO_FOUR, STEPS - TO_FOUR),
            (1, TO_ONE, STEPS - TO_ONE)]
  runs = _run_groups(data_dir, tmp_path, groups)
  one = runs[(1, 0, STEPS)]['indices']
  assert len(one) == STEPS and all(len(b) == grain_worker.GLOBAL_BATCH for b in one)
  # Row for row, not only as multisets: the same global batches on 1, 2 and 4 processes.
  assert runs[(2, 0, STEPS)]['indices'] == one
  assert runs[(4, TO_FOUR, STEPS - TO_FOUR)]['indices'] == one[TO_FOUR:]
  assert runs[(1, TO_ONE, STEPS - TO_ONE)]['indices'] == one[TO_ONE:]
  # The first epoch shows every example at most once, the whole epoch exactly once.
  n = len(_source(data_dir, 'train'))
  stream = sum(one, [])
  assert sorted(stream[:n]) == list(range(n))
  assert stream[n:] != stream[:len(stream) - n]  # the next epoch has an order of its own
  labels = [_source(data_dir, 'train')[i]['label'] for i in stream]
  assert sum(runs[(1, 0, STEPS)]['labels'], []) == labels


def _global_rows(data_dir, batch, steps, count, **kwargs):
  """The example indices of `steps` global batches, read as each of `count` processes here."""
  streams = [
      feed.train_batches(_cfg(data_dir), global_batch_size=batch, seed=grain_worker.SEED,
                         process_index=index, process_count=count, **kwargs)
      for index in range(count)
  ]
  rows = []
  for _ in range(steps):
    for stream in streams:
      next(stream)
      rows += stream.indices.tolist()
  return rows


def test_resume_at_other_batch_sizes_continues_the_stream_at_the_examples_taken(data_dir):
  # (global batch, processes, steps): 13 x 48 on 2 processes, then 9 x 32 on one, then 12 x 64
  # on 4 ends at 1,680, past the end of the first epoch (1437).
  segments = [(48, 2, 13), (32, 1, 9), (64, 4, 12)]
  unbroken = _global_rows(data_dir, 48, STEPS, 1)
  step, taken, rows = 0, 0, []
  for batch, count, steps in segments:
    # The run's step times this segment's batch is not where the stream stands: start_example is.
    rows += _global_rows(data_dir, batch, steps, count, start_step=step, start_example=taken)
    step, taken = step + steps, taken + batch * steps
  assert taken == len(unbroken) and rows == unbroken


def test_rows_are_pad_crops_of_their_examples_and_the_seed_changes_the_order(data_dir):
  source = _source(data_dir, 'train')
  batches = feed.train_batches(_cfg(data_dir), global_batch_size=16, seed=3, process_index=0,
                               process_count=1)
  crops = {0: 0, 1: 0, 2: 0}
  for _ in range(3):
    batch = next(batches)
    assert batch['image'].dtype == np.uint8 and batch['label'].dtype == np.int32
    for image, label, index in zip(batch['image'], batch['label'], batches.indices):
      stored = source[int(index)]
      assert label == stored['label']
      padded = np.pad(stored['image'], ((1, 1), (1, 1), (0, 0)))
      offsets = [(t, l)
                 for t in range(3)
                 for l in range(3)
                 if np.array_equal(padded[t:t + 8, l:l + 8], image)]
      assert offsets
      crops[offsets[0][0]] += 1
  assert batches.skipped == 0
  assert all(crops.values())  # every vertical offset was drawn
  first = batches.indices
  other = feed.train_batches(_cfg(data_dir), global_batch_size=16, seed=4, process_index=0,
                             process_count=1)
  next(other), next(other), next(other)
  assert not np.array_equal(other.indices, first)


@pytest.mark.parametrize('count', [1, 3])
def test_eval_batches_equal_the_tf_data_pipelines(data_dir, count):
  for index in range(count):
    kwargs = {'global_batch_size': 63, 'process_index': index, 'process_count': count}
    got = list(feed.eval_batches(_cfg(data_dir), **kwargs))
    expected = list(feed.eval_batches(dataset_config('digits', data_dir), **kwargs))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
      assert g.keys() == e.keys()
      for key in g:
        np.testing.assert_array_equal(g[key], e[key])
  info = feed.get_info(_cfg(data_dir))
  assert info == feed.get_info(dataset_config('digits', data_dir))


def test_an_unknown_loader_is_refused_naming_the_loaders(data_dir):
  with pytest.raises(ConfigError, match=r"config.dataset.loader='dali'.*'tf.data', 'grain'"):
    feed.get_info(_cfg(data_dir, loader='dali'))


def test_data_without_the_array_record_copy_asks_for_prepare(digits_dir):
  with pytest.raises(DataError,
                     match='no ArrayRecord files.*se_flax.data.prepare --dataset=digits'):
    feed.get_info(_cfg(digits_dir))


def test_unprepared_data_asks_for_prepare(tmp_path):
  with pytest.raises(DataError, match='not prepared.*se_flax.data.prepare --dataset=digits'):
    feed.get_info(_cfg(str(tmp_path)))


@pytest.mark.parametrize('field, value, named', [
    ('image_size', 16, 'stored size 8'),
])
def test_what_the_grain_loader_does_not_apply_is_refused(data_dir, field, value, named):
  cfg = _cfg(data_dir)
  *parents, leaf = field.split('.')
  node = cfg
  for parent in parents:
    node = node[parent]
  node[leaf] = value
  with pytest.raises(ConfigError, match=named):
    grain_source.get_info(cfg)


def test_random_erasing_changes_one_box_and_leaves_the_crops_and_order(data_dir):

  def first_batch(erasing):
    batches = feed.train_batches(_cfg(data_dir, random_erasing=erasing), global_batch_size=32,
                                 seed=5, process_index=0, process_count=1)
    return next(batches), batches.indices

  (plain, order), (erased, erased_order) = first_batch(0.0), first_batch(1.0)
  np.testing.assert_array_equal(order, erased_order)
  np.testing.assert_array_equal(plain['label'], erased['label'])
  changed = 0
  for a, b in zip(plain['image'], erased['image']):
    rows, cols = np.nonzero((a != b).any(axis=-1))
    if rows.size:
      changed += 1
      # One box, smaller than the image on both sides (timm's rule); the rest is untouched.
      assert rows.max() - rows.min() + 1 < a.shape[0] and cols.max() - cols.min() + 1 < a.shape[1]
  assert changed > len(plain['image']) // 2


# RandAugment as "ResNet strikes back" A1 draws it.
RAND_AUGMENT = {'num_ops': 2, 'magnitude': 7.0, 'magnitude_std': 0.5, 'increasing': True}


def _recipe_cfg(data_dir, copies=1, **randaugment):
  cfg = _cfg(data_dir, aug_repeats=copies)
  cfg.randaugment.update(randaugment)
  return cfg


def _epochs(cfg, epochs, seed=0):
  """(example indices, images, labels) of the first `epochs` epochs of 1437, 3 batches each."""
  batches = feed.train_batches(cfg, global_batch_size=479, seed=seed, process_index=0,
                               process_count=1)
  parts = []
  for _ in range(3 * epochs):
    batch = next(batches)
    parts.append((batches.indices, batch['image'], batch['label']))
  return [np.concatenate(p) for p in zip(*parts)]


def test_repeated_augmentation_holds_a_third_of_an_epoch_three_times_in_a_row(data_dir):
  n = len(_source(data_dir, 'train'))
  assert n == 3 * 479
  index, images, labels = _epochs(_recipe_cfg(data_dir, copies=3), 2)
  kept = []
  for epoch in range(2):
    runs = index[epoch * n:(epoch + 1) * n].reshape(-1, 3)
    assert (runs == runs[:, :1]).all(), 'the copies of an example are not consecutive'
    # Each kept example exactly three times: the epoch's multiset.
    values, counts = np.unique(runs, return_counts=True)
    assert len(values) == n // 3 and (counts == 3).all()
    kept.append(set(values.tolist()))
  assert kept[0] <= set(range(n)) and kept[1] <= set(range(n))
  # Each epoch keeps a random third of its own: two share about a third of their examples.
  assert 100 < len(kept[0] & kept[1]) < 220
  source = _source(data_dir, 'train')
  assert labels.tolist() == [source[int(i)]['label'] for i in index]
  copies = images.reshape(-1, 3, *images.shape[1:])
  # 1-pixel pad-crops: three copies draw one of 9 offsets alike about once in 81.
  differ = sum(len({c.tobytes() for c in run}) > 1 for run in copies)
  assert differ > 0.9 * len(copies)


def test_an_epoch_cuts_the_last_run_of_copies_to_its_length(data_dir):
  # ceil(1437 / 2) = 719 examples twice are 1438 positions: the last example once.
  n = 1437
  index, _, _ = _epochs(_recipe_cfg(data_dir, copies=2), 2)
  for epoch in range(2):
    values, counts = np.unique(index[epoch * n:(epoch + 1) * n], return_counts=True)
    assert len(values) == 719 and sorted(counts.tolist()) == [1] + [2] * 718
    assert index[epoch * n + n - 1] != index[epoch * n + n - 2]


def _global_batches(cfg, count, start, steps):
  """(indices, images) of global batches start.. start + steps, read as `count` processes.

  The processes' iterators run side by side in this process; tests/data/grain_worker.py
  shows on the default config that real processes read the same.
  """
  readers = [
      feed.train_batches(cfg, global_batch_size=grain_worker.GLOBAL_BATCH, seed=grain_worker.SEED,
                         start_step=start, process_index=index, process_count=count)
      for index in range(count)
  ]
  indices, images = [], []
  for _ in range(steps):
    rows = [(next(r)['image'], r.indices) for r in readers]
    images.append(np.concatenate([image for image, _ in rows]))
    indices.append(np.concatenate([index for _, index in rows]))
  return np.stack(indices), np.stack(images)


def test_repeats_and_randaugment_do_not_depend_on_the_process_count(data_dir):
  # 5 copies: runs of copies straddle the two processes' rows (24 each) and the global batches
  # (48), 288 examples fill 1440 positions, so the epoch (1437) cuts the last run; a run
  # resumed on 4 processes starts inside a run of copies (13 * 48 = 5 * 124 + 4).
  cfg = _recipe_cfg(data_dir, copies=5, **RAND_AUGMENT)
  steps, start = 32, 13
  indices, images = _global_batches(cfg, 1, 0, steps)
  for count, first in ((2, 0), (4, start)):
    other_indices, other_images = _global_batches(cfg, count, first, steps - first)
    np.testing.assert_array_equal(other_indices, indices[first:])
    np.testing.assert_array_equal(other_images, images[first:])
  stream = indices.ravel()
  assert (stream[:1435].reshape(-1, 5) == stream[:1435:5, None]).all()
  assert len(set(stream[:1437].tolist())) == 288 and stream[1436] != stream[1434]
  # The copies of an example are augmented each its own way.
  assert len({image.tobytes() for image in images.reshape(-1, 8, 8, 1)[:1435]}) > 0.9 * 1435


def test_randaugment_changes_the_images_and_leaves_the_crops_and_order(data_dir):

  def first_batch(**randaugment):
    batches = feed.train_batches(_recipe_cfg(data_dir, **randaugment), global_batch_size=64, seed=5,
                                 process_index=0, process_count=1)
    return next(batches), batches.indices

  (plain, order), (augmented, augmented_order) = first_batch(), first_batch(**RAND_AUGMENT)
  np.testing.assert_array_equal(order, augmented_order)
  np.testing.assert_array_equal(plain['label'], augmented['label'])
  assert augmented['image'].dtype == np.uint8 and augmented['image'].shape == (64, 8, 8, 1)
  changed = [not np.array_equal(a, b) for a, b in zip(plain['image'], augmented['image'])]
  # Neither op applied: 1/4; an applied op that leaves an image as it was is rarer.
  assert 0.5 < np.mean(changed) < 0.95
  again, _ = first_batch(**RAND_AUGMENT)
  np.testing.assert_array_equal(again['image'], augmented['image'])


@pytest.mark.parametrize('copies', [1, 3])
def test_each_row_is_its_keyed_crop_then_its_keyed_randaugment(data_dir, copies):
  # The row at stream position p: example i, epoch e, copy c, its pad-crop drawn from
  # (seed, e, i) and its RandAugment from a stream of its own; copy c > 0 from (seed, e, i, c).
  seed, batch = 11, 40
  cfg = _recipe_cfg(data_dir, copies=copies, **RAND_AUGMENT)
  batches = feed.train_batches(cfg, global_batch_size=batch, seed=seed, process_index=0,
                               process_count=1, start_step=35)  # epoch 0 ends at 1437 = 35.9 * 40
  source = _source(data_dir, 'train')
  rows, distinct = 0, set()
  for step in range(35, 37):
    images = next(batches)['image']
    for row, (index, image) in enumerate(zip(batches.indices, images)):
      position = step * batch + row
      epoch, copy = divmod(position, 1437)[0], divmod(position, 1437)[1] % copies
      key = (epoch, int(index), copy) if copy else (epoch, int(index))
      crop = grain_augment.pad_crop(source[int(index)]['image'],
                                    grain_source._generator(seed, grain_source._AUGMENT, *key), 1,
                                    False)
      expected = grain_randaugment.rand_augment(
          crop, grain_source._generator(seed, grain_source._RANDAUGMENT, *key), 2, 7.0, 0.5, True)
      np.testing.assert_array_equal(image, expected)
      rows += 1
      distinct.add(image.tobytes())
  assert rows == 2 * batch and len(distinct) > 0.9 * rows
