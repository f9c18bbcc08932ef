"""The 'synthetic' data set: generated batches through se_flax.data.feed, with no TensorFlow."""

import os
import subprocess
import sys

import numpy as np

from se_flax.data import datasets
from se_flax.data import feed
from se_flax.data import synthetic
from tests.data.dataset_configs import dataset_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME = next(spec.name for spec in datasets.DATASETS.values() if spec.synthetic)
SPEC = datasets.get(NAME)


def _cfg(image_size=8):
  return dataset_config(NAME, '/nonexistent', image_size=image_size)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_entry_points_import_no_tensorflow():
  code = ('import sys\n'
          'from tests.data.dataset_configs import dataset_config\n'
          'from se_flax.data import feed\n'
          f'cfg = dataset_config({NAME!r}, "/nonexistent", image_size=16)\n'
          'info = feed.get_info(cfg)\n'
          'train = next(feed.train_batches(cfg, global_batch_size=4, seed=0, process_index=0, '
          'process_count=1))\n'
          'evaluated = next(feed.eval_batches(cfg, global_batch_size=4, process_index=0, '
          'process_count=1))\n'
          'print(info.image_shape, train["image"].dtype, evaluated["image"].dtype)\n'
          'print("tensorflow" in sys.modules)\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, env={
      **os.environ, 'PYTHONPATH': ROOT
  }, check=True).stdout
  assert out.splitlines() == ['(16, 16, 3) uint8 float32', 'False']


def test_info_follows_the_spec_and_the_configured_size():
  info = feed.get_info(_cfg(image_size=40))
  assert info == datasets.DatasetInfo(NAME, SPEC.num_classes, SPEC.num_train, SPEC.num_eval,
                                      (40, 40, 3))
  assert feed.steps_per_epoch(info, 1024) == SPEC.num_train // 1024


def test_train_batches_are_uint8_labelled_pool_images_and_deterministic():
  run = lambda **kw: feed.train_batches(_cfg(), global_batch_size=12, seed=3, process_index=0,
                                        process_count=1, **kw)
  batches = _take(run(), 5)
  pool, pool_labels = synthetic._pool(SPEC, 8, 3)  # pylint: disable=protected-access
  for batch in batches:
    assert batch['image'].shape == (12, 8, 8, 3) and batch['image'].dtype == np.uint8
    assert batch['label'].dtype == np.int32
    for image, label in zip(batch['image'], batch['label']):
      rows = [i for i in range(synthetic.POOL) if np.array_equal(pool[i], image)]
      assert rows and all(pool_labels[i] == label == i % SPEC.num_classes for i in rows)
  assert not np.array_equal(batches[0]['image'], batches[1]['image'])
  again = _take(run(), 5)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  # Exact resume: a stream started at batch 3 continues the uninterrupted one.
  resumed = _take(run(start_step=3), 2)
  for a, b in zip(batches[3:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
  # Batches are drawn per step, so the examples a run took (the loop passes them) change nothing.
  for a, b in zip(batches[3:], _take(run(start_step=3, start_example=100), 2)):
    np.testing.assert_array_equal(a['image'], b['image'])
  other_seed = next(
      feed.train_batches(_cfg(), global_batch_size=12, seed=4, process_index=0, process_count=1))
  assert not np.array_equal(other_seed['image'], batches[0]['image'])


def test_processes_get_slices_of_the_same_global_batch():
  whole = _take(
      feed.train_batches(_cfg(), global_batch_size=12, seed=1, process_index=0, process_count=1), 2)
  parts = [
      _take(
          feed.train_batches(_cfg(), global_batch_size=12, seed=1, process_index=p,
                             process_count=3), 2) for p in range(3)
  ]
  for k in range(2):
    np.testing.assert_array_equal(np.concatenate([p[k]['image'] for p in parts]), whole[k]['image'])


def test_eval_counts_every_example_once_normalised():
  per_process = [
      list(feed.eval_batches(_cfg(), global_batch_size=4096, process_index=p, process_count=2))
      for p in range(2)
  ]
  assert len(per_process[0]) == len(per_process[1]) == -(-SPEC.num_eval // 4096)
  assert sum(b['mask'].sum() for batches in per_process for b in batches) == SPEC.num_eval
  pool, labels = synthetic._pool(SPEC, 8, 0)  # pylint: disable=protected-access
  first = per_process[0][0]
  expected = (pool[:4].astype(np.float32) - np.float32(SPEC.mean)) / np.float32(SPEC.std)
  np.testing.assert_allclose(first['image'][:4], expected, rtol=1e-6)
  np.testing.assert_array_equal(first['label'][:4], labels[:4])
  last = per_process[1][-1]
  assert np.all(last['image'][last['mask'] == 0] == 0)
