"""ImageNet through tfds's own imagenet2012 builder, from tars in the real ILSVRC2012 layout."""

import collections

import numpy as np
import tensorflow_datasets as tfds

from se_flax.data import datasets
from se_flax.data import pipeline
from tests.data import tiny_imagenet
from tests.data.dataset_configs import dataset_config


def _label_ids():
  names = tfds.core.tfds_path('datasets/imagenet2012/labels.txt').read_text().split()
  return {synset: i for i, synset in enumerate(names)}


def _pixels(images):
  if images.dtype == np.uint8:  # train batches
    return images.astype(np.float64)
  return np.asarray(images, np.float64) * datasets.IMAGENET_STD + datasets.IMAGENET_MEAN


def _counts(labels):
  return collections.Counter(np.asarray(labels).tolist())


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_prepared_by_the_tfds_builder(imagenet):
  tiny, data_dir = imagenet
  builder = tfds.builder('imagenet2012', data_dir=data_dir)
  assert builder.info.splits['train'].num_examples == len(tiny.train) == 12
  assert builder.info.splits['validation'].num_examples == len(tiny.validation) == 6
  info = pipeline.get_info(dataset_config('imagenet2012', data_dir))
  assert info == pipeline.DatasetInfo('imagenet2012', 1000, 12, 6, (224, 224, 3))


def test_train_batches_at_224(imagenet):
  tiny, data_dir = imagenet
  cfg = dataset_config('imagenet2012', data_dir, shuffle_buffer=5)
  ids = _label_ids()
  color = {ids[s]: np.array(c) for s, c in tiny.colors.items()}
  # Global batch 4: three batches are one epoch of the 12 train images.
  batches = _take(pipeline.train_batches(cfg, global_batch_size=4, seed=0), 6)
  for batch in batches:
    assert batch['image'].shape == (4, 224, 224, 3) and batch['image'].dtype == np.uint8
    assert batch['label'].dtype == np.int32
    for image, label in zip(_pixels(batch['image']), batch['label']):
      # Each synset's images scatter around its colour: image and label belong together.
      assert np.abs(image.mean((0, 1)) - color[label]).max() < 12
  for epoch in (batches[:3], batches[3:]):
    labels = np.concatenate([b['label'] for b in epoch])
    assert _counts(labels) == _counts([ids[s] for s in tiny.train.values()])


def test_train_is_deterministic_and_resumes(imagenet):
  _, data_dir = imagenet
  cfg = dataset_config('imagenet2012', data_dir, image_size=64, eval_resize=72, shuffle_buffer=5)
  run = lambda **kw: pipeline.train_batches(cfg, global_batch_size=4, seed=5, **kw)
  first, second = _take(run(), 7), _take(run(), 7)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  for a, b in zip(first[4:], _take(run(start_step=4), 3)):  # Resumes inside the second epoch.
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_eval_batches(imagenet):
  tiny, data_dir = imagenet
  cfg = dataset_config('imagenet2012', data_dir)
  batches = list(pipeline.eval_batches(cfg, global_batch_size=4))
  assert len(batches) == 2 and all(b['image'].shape == (4, 224, 224, 3) for b in batches)
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.tolist() == [1.0] * 6 + [0.0] * 2
  labels = np.concatenate([b['label'] for b in batches])[:6]
  ids = _label_ids()
  assert _counts(labels) == _counts([ids[s] for s in tiny.validation.values()])
  real = _pixels(np.concatenate([b['image'] for b in batches])[:6])
  np.testing.assert_allclose(real.mean((1, 2)), 128, atol=4)  # Validation images are grey.


def test_eval_two_processes(imagenet):
  tiny, data_dir = imagenet
  cfg = dataset_config('imagenet2012', data_dir, image_size=32, eval_resize=40)
  per_process = [
      list(pipeline.eval_batches(cfg, global_batch_size=4, process_index=p, process_count=2))
      for p in range(2)
  ]
  assert [len(b) for b in per_process] == [2, 2]  # 3 + 3 examples, 2 per batch.
  labels = [l for batches in per_process for b in batches for l in b['label'][b['mask'] == 1]]
  ids = _label_ids()
  assert _counts(labels) == _counts([ids[s] for s in tiny.validation.values()])


def test_corrupt_train_jpeg_is_skipped_and_counted(corrupt_imagenet):
  tiny, data_dir = corrupt_imagenet
  assert len(tiny.corrupt) == 2
  cfg = dataset_config('imagenet2012', data_dir, image_size=32, eval_resize=40)
  assert pipeline.get_info(cfg).num_train == 13  # The truncated file is stored as is.
  ids = _label_ids()
  epoch_labels = _counts([ids[s] for s in tiny.train.values()])
  # Global batch 12: each batch is exactly the 12 decodable images of one epoch.
  iterator = pipeline.train_batches(cfg, global_batch_size=12, seed=0)
  for k in range(1, 5):
    batch = next(iterator)
    assert _counts(batch['label']) == epoch_labels
    assert np.isfinite(batch['image']).all()
    # The skip of epoch k - 1 shows up once the stream has passed it.
    assert iterator.skipped in (k - 1, k)
  assert iterator.skipped >= 3


def test_corrupt_eval_jpeg_is_skipped_and_counted(corrupt_imagenet):
  tiny, data_dir = corrupt_imagenet
  cfg = dataset_config('imagenet2012', data_dir, image_size=32, eval_resize=40)
  ids = _label_ids()
  decodable = _counts([ids[s] for f, s in tiny.validation.items() if f not in tiny.corrupt])
  batches = list(pipeline.eval_batches(cfg, global_batch_size=4))
  assert len(batches) == 2 and sum(b['mask'].sum() for b in batches) == 5
  assert _counts([l for b in batches for l in b['label'][b['mask'] == 1]]) == decodable
  # Two processes still yield the same number of batches, whichever holds the bad file.
  per_process = [
      list(pipeline.eval_batches(cfg, global_batch_size=4, process_index=p, process_count=2))
      for p in range(2)
  ]
  assert [len(b) for b in per_process] == [2, 2]
  assert sum(b['mask'].sum() for batches in per_process for b in batches) == 5


def test_tiny_imagenet_layout(tmp_path):
  import tarfile  # pylint: disable=g-import-not-at-top
  tiny = tiny_imagenet.make_tiny_imagenet(tmp_path, synsets=('n01440764', 'n15075141'), per_class=2,
                                          num_val=3)
  with tarfile.open(tmp_path / tiny_imagenet.TRAIN_TAR) as tar:
    assert sorted(tar.getnames()) == ['n01440764.tar', 'n15075141.tar']
  with tarfile.open(tmp_path / tiny_imagenet.VAL_TAR) as tar:
    assert tar.getnames() == [f'ILSVRC2012_val_0000000{i}.JPEG' for i in (1, 2, 3)]
  assert list(tiny.validation.values()) == ['n01751748', 'n09193705', 'n02105855']
  assert sorted(tiny.train) == [
      'n01440764_1.JPEG', 'n01440764_2.JPEG', 'n15075141_1.JPEG', 'n15075141_2.JPEG'
  ]
