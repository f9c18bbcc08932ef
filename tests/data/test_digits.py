"""The digits builder serves exactly scikit-learn's data, in a fixed stratified split."""

import hashlib

import numpy as np
import pytest
from sklearn import datasets
import tensorflow_datasets as tfds

from se_flax.data import digits


@pytest.fixture(scope='module')
def sklearn_digits():
  data = datasets.load_digits()
  return data.images, data.target


@pytest.fixture(scope='module')
def prepared(digits_dir):
  builder = tfds.builder('digits', data_dir=digits_dir)
  return {
      split: tfds.as_numpy(builder.as_dataset(split, batch_size=-1)) for split in ('train', 'test')
  }


def _rows(images, labels):
  """Each example as bytes (64 pixels + label), for multiset comparison."""
  images = np.asarray(images, np.uint8).reshape(len(labels), -1)
  return sorted(bytes(x) + bytes([int(y)]) for x, y in zip(images, labels))


def _scaled(images_0_16):
  # 0..16 -> 0..255, half up, written independently of the module under test.
  return ((np.asarray(images_0_16, np.int64) * 255 * 2 + 16) // 32).astype(np.uint8)


def test_builder_info(digits_dir):
  builder = tfds.builder('digits', data_dir=digits_dir)
  assert builder.version == '1.0.0'
  assert builder.info.features['image'].shape == (8, 8, 1)
  assert builder.info.features['label'].num_classes == 10
  assert {
      s: builder.info.splits[s].num_examples for s in ('train', 'test')
  } == {
      'train': 1437,
      'test': 360
  }


def test_union_is_sklearn_data(prepared, sklearn_digits):
  images, labels = sklearn_digits
  union_images = np.concatenate([prepared['train']['image'], prepared['test']['image']])
  union_labels = np.concatenate([prepared['train']['label'], prepared['test']['label']])
  assert union_images.dtype == np.uint8 and union_images.shape == (1797, 8, 8, 1)
  assert _rows(union_images, union_labels) == _rows(_scaled(images), labels)


def test_splits_are_the_documented_rows(prepared, sklearn_digits):
  images, labels = sklearn_digits
  train, test = digits.split_indices(labels)
  assert len(set(train) & set(test)) == 0 and len(train) + len(test) == 1797
  for split, rows in (('train', train), ('test', test)):
    assert _rows(prepared[split]['image'],
                 prepared[split]['label']) == _rows(_scaled(images[rows]), labels[rows])


def test_split_is_stratified(sklearn_digits):
  _, labels = sklearn_digits
  _, test = digits.split_indices(labels)
  counts = np.bincount(labels, minlength=10)
  expected = counts * 360 / 1797
  assert np.all(np.abs(np.bincount(labels[test], minlength=10) - expected) < 1)


def test_split_never_changes(sklearn_digits):
  # A digest of the test rows pins the split across machines and library versions.
  _, test = digits.split_indices(sklearn_digits[1])
  digest = hashlib.sha256(np.asarray(test, '<i8').tobytes()).hexdigest()
  assert digest == 'd040d215f6d53853c9970b2d18eb9baf0d3094938a1baddba4675d9b45e11fb6'


def test_pixel_scaling():
  np.testing.assert_array_equal(digits._to_uint8(np.arange(17)), _scaled(np.arange(17)))
  assert digits._to_uint8([0, 8, 16]).tolist() == [0, 128, 255]


def test_get_info_prepares_digits_when_missing(tmp_path):
  from se_flax.data import pipeline  # pylint: disable=g-import-not-at-top
  from tests.data.dataset_configs import dataset_config  # pylint: disable=g-import-not-at-top
  info = pipeline.get_info(dataset_config('digits', tmp_path))
  assert info == pipeline.DatasetInfo('digits', 10, 1437, 360, (8, 8, 1))
  assert tfds.builder('digits', data_dir=str(tmp_path)).is_prepared()


def test_prepares_into_any_data_dir(tmp_path):
  builder = tfds.builder('digits', data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert builder.info.splits['test'].num_examples == 360
  assert (tmp_path / 'digits' / '1.0.0' / 'dataset_info.json').exists()
