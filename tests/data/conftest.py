"""Shared data: digits prepared once; tiny ImageNets and a tiny CIFAR-10 built by tfds itself."""

import pytest

from se_flax.data import pipeline
from tests.data import tiny_cifar
from tests.data import tiny_imagenet
from tests.data.dataset_configs import dataset_config


@pytest.fixture(scope='session')
def digits_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds_digits')
  pipeline.get_info(dataset_config('digits', data_dir))  # Prepares it.
  return str(data_dir)


@pytest.fixture
def digits_cfg(digits_dir):

  def make(name='digits', **overrides):
    return dataset_config(name, digits_dir, **overrides)

  return make


def _imagenet(tmp_path_factory, name, **kwargs):
  root = tmp_path_factory.mktemp(name)
  tiny = tiny_imagenet.make_tiny_imagenet(root / 'manual', **kwargs)
  tiny_imagenet.prepare_tiny_imagenet(root / 'data', root / 'manual')
  return tiny, str(root / 'data')


@pytest.fixture(scope='session')
def imagenet(tmp_path_factory):
  """(TinyImagenet, data_dir): 3 synsets x 4 train images, 6 validation images."""
  return _imagenet(tmp_path_factory, 'tiny_imagenet')


@pytest.fixture(scope='session')
def corrupt_imagenet(tmp_path_factory):
  """As `imagenet`, plus one truncated JPEG in each split."""
  return _imagenet(tmp_path_factory, 'corrupt_imagenet', num_corrupt=1, num_corrupt_val=1, seed=1)


@pytest.fixture(scope='session')
def cifar10(tmp_path_factory):
  """(arrays, data_dir): 20 train and 6 test random images prepared by tfds's cifar10 builder."""
  root = tmp_path_factory.mktemp('cifar10_tiny')
  arrays = tiny_cifar.make_tiny_cifar10(str(root / 'extracted'))
  tiny_cifar.prepare_tiny_cifar10(root / 'data', str(root / 'extracted'))
  return arrays, str(root / 'data')
