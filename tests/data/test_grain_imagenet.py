"""The grain loader on a tiny ImageNet prepared by tfds's own builder, one JPEG of each split
truncated: crops, labels, the undecodable count, and evaluation against the tf.data pipeline."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from se_flax.data import feed
from tests.data import tiny_imagenet
from tests.data.dataset_configs import dataset_config

# One worker prepares the tiny ImageNet once for every test here.
pytestmark = pytest.mark.xdist_group('grain_imagenet')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE, RESIZE = 32, 40


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
  """(TinyImagenet, data_dir): 12 decodable train JPEGs and 1 truncated; 6 validation, 1
  truncated; TFRecord files and their ArrayRecord copy, by `prepare`."""
  root = tmp_path_factory.mktemp('grain_imagenet')
  return tiny_imagenet.make_and_prepare(root, num_corrupt=1, num_corrupt_val=1)


def _cfg(data_dir, **overrides):
  return dataset_config(
      'imagenet2012', data_dir, **{
          'image_size': SIZE,
          'eval_resize': RESIZE,
          'shuffle_buffer': 16,
          **overrides
      })


def _builder(data_dir):
  return tfds.builder_from_directory(tfds.builder('imagenet2012', data_dir=data_dir).data_dir)


def _labels(data_dir, split):
  builder = _builder(data_dir)
  source = builder.as_data_source(split, file_format='array_record',
                                  decoders={'image': tfds.decode.SkipDecoding()})
  return [int(source[i]['label']) for i in range(len(source))]


def test_an_epoch_replaces_the_undecodable_example_and_counts_it(imagenet):
  tiny, data_dir = imagenet
  labels = _labels(data_dir, 'train')
  n = len(labels)
  assert n == len(tiny.train) + 1
  # One global batch is one epoch.
  batches = feed.train_batches(_cfg(data_dir, loader='grain'), global_batch_size=n, seed=0,
                               process_index=0, process_count=1)
  batch = next(batches)
  assert batch['image'].shape == (n, SIZE, SIZE, 3) and batch['image'].dtype == np.uint8
  assert batches.skipped == 1
  # Every decodable example once, and one of them again in the undecodable one's place.
  assert len(set(batches.indices.tolist())) == n - 1
  assert batch['label'].tolist() == [labels[i] for i in batches.indices]
  # Train images scatter around their synset's colour (tests/data/tiny_imagenet.py).
  synsets = tiny_imagenet.DEFAULT_SYNSETS
  colours = np.array([tiny.colors[s] for s in synsets], np.float32)
  means = batch['image'].reshape(n, -1, 3).mean(axis=1)
  nearest = np.argmin(np.abs(means[:, None] - colours[None]).sum(-1), axis=1)
  ids = _label_ids(data_dir, synsets)
  assert [ids[k] for k in nearest] == batch['label'].tolist()


def _label_ids(data_dir, synsets):
  builder = _builder(data_dir)
  return [builder.info.features['label'].str2int(s) for s in synsets]


@pytest.mark.parametrize('count', [1, 2])
def test_eval_matches_the_tf_data_pipeline_and_masks_the_undecodable_image(imagenet, count):
  tiny, data_dir = imagenet
  real = {'grain': [], 'tf.data': []}
  lengths = set()
  for loader, rows in real.items():
    for index in range(count):
      batches = list(
          feed.eval_batches(_cfg(data_dir, loader=loader), global_batch_size=4, process_index=index,
                            process_count=count))
      lengths.add(len(batches))
      for b in batches:
        rows += [(img, lab) for img, lab, m in zip(b['image'], b['label'], b['mask']) if m]
  # Every process of either loader yields the same number of batches, whatever it dropped.
  assert len(lengths) == 1
  assert len(real['grain']) == len(tiny.validation) - 1
  assert len(real['tf.data']) == len(real['grain'])
  for (got, got_label), (expected, label) in zip(real['grain'], real['tf.data']):
    assert got_label == label
    # Normalised by the std (about 57): test_grain_augment's bound on 0..255 pixels, scaled.
    np.testing.assert_allclose(got, expected, rtol=0, atol=2 ** -20 * 255 / 57)


def test_reading_imports_no_tensorflow(imagenet, tmp_path):
  _, data_dir = imagenet
  config = json.dumps(_cfg(data_dir, loader='grain').to_dict())
  out = tmp_path / 'seen.json'
  subprocess.run(
      [sys.executable, '-m', 'tests.data.grain_worker', config, '0', '1', '0', '2',
       str(out)], cwd=ROOT, env={
           **os.environ, 'PYTHONPATH': ROOT,
           'JAX_PLATFORMS': 'cpu'
       }, check=True, capture_output=True)
  seen = json.loads(out.read_text())
  assert len(seen['indices']) == 2 and not seen['tensorflow']


def test_randaugment_and_repeats_build_batches_and_count_each_undecodable_copy(imagenet):
  _, data_dir = imagenet
  labels = _labels(data_dir, 'train')
  n = len(labels)  # 12 decodable examples and 1 truncated
  cfg = _cfg(data_dir, loader='grain', aug_repeats=2)
  cfg.randaugment.update(num_ops=2, magnitude=9.0, magnitude_std=0.5)
  # One global batch is one epoch: 7 examples twice, cut to 13 positions.
  batches = feed.train_batches(cfg, global_batch_size=n, seed=0, process_index=0, process_count=1)
  kept, counted, met = -(-n // 2), 0, 0
  for _ in range(6):
    batch = next(batches)
    assert batch['image'].shape == (n, SIZE, SIZE, 3) and batch['image'].dtype == np.uint8
    assert batch['label'].tolist() == [labels[i] for i in batches.indices]
    skipped, counted = batches.skipped - counted, batches.skipped
    # The truncated example, when the epoch keeps it, fails in each of its copies (two, or
    # one in the cut last place), and the next decodable element stands in for each.
    assert skipped in (0, 1, 2)
    assert len(set(batches.indices.tolist())) == kept - (skipped > 0)
    met += skipped > 0
  assert met  # (6/13)^6 = 1% that no epoch keeps it; the seed fixes which
