"""A few random images in CIFAR-10's binary format, prepared by tfds's own cifar10 builder.

The real archive (cifar-10-binary.tar.gz) unpacks to `cifar-10-batches-bin/`
holding data_batch_1..5.bin, test_batch.bin and batches.meta.txt; each record
is one label byte followed by the 32x32 red, green and blue planes, row-major
(https://www.cs.toronto.edu/~kriz/cifar.html, "Binary version"). tfds's
builder downloads and extracts that archive; here its download manager is
pointed at a directory written in the same layout instead.
"""

import os

import numpy as np
import pytest

TRAIN_FILES = [f'data_batch_{i}.bin' for i in range(1, 6)]
LABEL_NAMES = [
    'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'
]


def _write(path, images, labels):
  planes = np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(labels), 3072)
  records = np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1)
  with open(path, 'wb') as f:
    f.write(records.tobytes())


def make_tiny_cifar10(extracted_dir, per_file=4, num_test=6, seed=0):
  """Writes `cifar-10-batches-bin/` under `extracted_dir`.

  Returns:
    {'train': (images uint8 (5 * per_file, 32, 32, 3), labels), 'test': (...)}.
  """
  rng = np.random.RandomState(seed)
  root = os.path.join(extracted_dir, 'cifar-10-batches-bin')
  os.makedirs(root, exist_ok=True)
  out = {}
  chunks = []
  for name in TRAIN_FILES:
    images = rng.randint(0, 256, (per_file, 32, 32, 3)).astype(np.uint8)
    labels = rng.randint(0, 10, per_file)
    _write(os.path.join(root, name), images, labels)
    chunks.append((images, labels))
  out['train'] = tuple(np.concatenate(c) for c in zip(*chunks))
  images = rng.randint(0, 256, (num_test, 32, 32, 3)).astype(np.uint8)
  labels = rng.randint(0, 10, num_test)
  _write(os.path.join(root, 'test_batch.bin'), images, labels)
  out['test'] = (images, labels)
  with open(os.path.join(root, 'batches.meta.txt'), 'w') as f:
    f.write('\n'.join(LABEL_NAMES) + '\n')
  return out


def prepare_tiny_cifar10(data_dir, extracted_dir):
  """Runs tfds's cifar10 builder into `data_dir`, reading `extracted_dir` instead of the web."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  import se_flax.data  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import  (tfds compatibility)
  builder = tfds.builder('cifar10', data_dir=os.fspath(data_dir))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tfds.download.DownloadManager, 'download_and_extract',
                  lambda self, url: extracted_dir)
    builder.download_and_prepare()
  return builder
