"""Configuration mistakes fail early, naming the field, the value and what is allowed."""

import os

import pytest

from se_flax import errors
from se_flax.data import datasets
from se_flax.data import pipeline
from tests.data import tiny_imagenet
from tests.data.dataset_configs import dataset_config


def test_unknown_name_lists_known_datasets(digits_cfg):
  with pytest.raises(ValueError) as e:
    pipeline.get_info(digits_cfg(name='mnist'))
  message = str(e.value)
  assert 'config.dataset.name' in message and "'mnist'" in message
  assert all(name in message for name in datasets.NAMES)


def test_missing_data_dir(tmp_path):
  missing = str(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError) as e:
    pipeline.get_info(dataset_config('digits', missing))
  assert 'config.dataset.data_dir' in str(e.value) and missing in str(e.value)


@pytest.mark.parametrize('field', ['train_split', 'eval_split'])
def test_unknown_split_lists_the_splits(digits_cfg, field):
  with pytest.raises(ValueError) as e:
    pipeline.get_info(digits_cfg(**{field: 'validation'}))
  message = str(e.value)
  assert f'config.dataset.{field}' in message and "'validation'" in message
  assert 'test, train' in message


def test_empty_split(digits_cfg):
  with pytest.raises(ValueError, match=r"config\.dataset\.eval_split='test\[:0\]'.*no examples"):
    pipeline.get_info(digits_cfg(eval_split='test[:0]'))


def test_bad_field_values(digits_cfg):
  with pytest.raises(ValueError, match='config.dataset.image_size=0'):
    pipeline.get_info(digits_cfg(image_size=0))
  with pytest.raises(ValueError, match='config.dataset.shuffle_buffer=0'):
    pipeline.get_info(digits_cfg(shuffle_buffer=0))
  with pytest.raises(ValueError, match='start_step=-1'):
    pipeline.train_batches(digits_cfg(), global_batch_size=8, seed=0, start_step=-1,
                           process_index=0, process_count=1)
  with pytest.raises(ValueError, match='start_example=-8'):
    pipeline.train_batches(digits_cfg(), global_batch_size=8, seed=0, start_example=-8,
                           process_index=0, process_count=1)


def test_unprepared_cifar_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    pipeline.get_info(dataset_config('cifar10', tmp_path, image_size=32, eval_split='test'))
  message = str(e.value)
  assert 'config.dataset.data_dir' in message and str(tmp_path) in message
  assert 'se_flax.data.prepare --dataset=cifar10' in message and 'cifar10-train.tfrecord' in message


def test_imagenet_without_manual_dir_names_the_tars(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    pipeline.get_info(dataset_config('imagenet2012', tmp_path))
  message = str(e.value)
  assert 'ILSVRC2012_img_train.tar' in message and 'ILSVRC2012_img_val.tar' in message
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in message
  assert 'config.dataset.manual_dir' in message


def test_imagenet_with_incomplete_manual_dir(tmp_path):
  manual = tmp_path / 'manual'
  tiny_imagenet.make_tiny_imagenet(manual, per_class=1, num_val=1)
  os.remove(manual / tiny_imagenet.VAL_TAR)
  with pytest.raises(FileNotFoundError) as e:
    pipeline.get_info(dataset_config('imagenet2012', tmp_path, manual_dir=str(manual)))
  message = str(e.value)
  assert 'ILSVRC2012_img_val.tar is missing' in message
  assert f"config.dataset.manual_dir='{manual}'" in message


def test_imagenet_field_checks(tmp_path):
  with pytest.raises(ValueError, match='config.dataset.eval_resize=200'):
    pipeline.get_info(dataset_config('imagenet2012', tmp_path, eval_resize=200))
  with pytest.raises(ValueError, match='config.dataset.cache=True'):
    pipeline.get_info(dataset_config('imagenet2012', tmp_path, cache=True))


def test_imagenet_is_prepared_from_the_tars_in_manual_dir(tmp_path):
  tiny_imagenet.make_tiny_imagenet(tmp_path / 'downloads' / 'manual', per_class=1, num_val=2)
  info = pipeline.get_info(dataset_config('imagenet2012', tmp_path))
  assert (info.num_train, info.num_eval, info.num_classes) == (3, 2, 1000)


def test_failures_are_se_flax_errors_with_the_config_exit_code(tmp_path, digits_cfg):
  """A bad value is a ConfigError, missing data a DataError: the command line exits 2 on both."""
  cases = [(errors.ConfigError, dataset_config('mnist', tmp_path)),
           (errors.ConfigError, digits_cfg(prefetch=-1)),
           (errors.ConfigError, digits_cfg(train_split='validation')),
           (errors.ConfigError, digits_cfg(eval_split='test[:0]')),
           (errors.DataError, dataset_config('digits', tmp_path / 'nowhere')),
           (errors.DataError, dataset_config('cifar10', tmp_path, image_size=32)),
           (errors.DataError, dataset_config('imagenet2012', tmp_path))]
  for kind, cfg in cases:
    with pytest.raises(kind) as e:
      pipeline.get_info(cfg)
    assert e.value.exit_code == errors.EXIT_CONFIG_ERROR
