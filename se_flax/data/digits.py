"""The embedded default data set: scikit-learn's handwritten digits as a tfds builder.

`sklearn.datasets.load_digits()` ships 1797 real 8x8 grayscale digits (pixel
counts 0..16, UCI "Optical Recognition of Handwritten Digits", test part) with
scikit-learn, so the demo and the tests exercise the same tfds -> tf.data path
as ImageNet without any download. Importing this module registers the builder,
after which `tfds.builder('digits', data_dir=...)` works.

The train/test split is fixed here, not by a library call whose algorithm could
change between versions:

* the test split holds TEST_SIZE = 360 examples, allocated to classes in
  proportion to the class sizes (largest-remainder rounding of
  n_c * 360 / 1797, ties to the lower class), so both splits are stratified;
* inside each class (in class order 0..9) the test examples are the first
  ones of `np.random.RandomState(SPLIT_SEED).permutation(n_c)`, drawn from a
  single RandomState whose stream NumPy keeps frozen across releases;
* the train split holds the other 1437.
"""

import numpy as np
import tensorflow_datasets as tfds

NUM_CLASSES = 10
TEST_SIZE = 360
SPLIT_SEED = 0


def _to_uint8(images_0_16):
  """Scales pixel counts 0..16 to 0..255, rounding half up (8 -> 128)."""
  return np.floor(np.asarray(images_0_16, np.float64) * 255.0 / 16.0 + 0.5).astype(np.uint8)


def split_indices(labels, test_size=TEST_SIZE, seed=SPLIT_SEED):
  """Returns (train, test) row indices of a stratified split of `labels`.

  Args:
    labels: int array (N,), the class of each row.
    test_size: examples in the test split.
    seed: RandomState seed choosing the test examples inside each class.

  Returns:
    Two sorted int64 arrays that partition range(N).
  """
  labels = np.asarray(labels)
  classes, counts = np.unique(labels, return_counts=True)
  quota = counts * test_size / labels.size
  per_class = np.floor(quota).astype(np.int64)
  # Largest remainder; np.argsort is stable, so equal remainders go to the lower class.
  order = np.argsort(-(quota - per_class), kind='stable')
  per_class[order[:test_size - per_class.sum()]] += 1
  rng = np.random.RandomState(seed)
  test = []
  for c, k in zip(classes, per_class):
    rows = np.flatnonzero(labels == c)
    test.append(rows[rng.permutation(rows.size)[:k]])
  test = np.sort(np.concatenate(test))
  train = np.setdiff1d(np.arange(labels.size), test)
  return train, test


def load_split(split):
  """Returns (images uint8 (N, 8, 8, 1), labels int64 (N,)) of 'train' or 'test', in row order."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  train, test = split_indices(digits.target)
  rows = {'train': train, 'test': test}[split]
  return _to_uint8(digits.images[rows])[..., None], digits.target[rows].astype(np.int64)


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 handwritten digits, split 1437 train / 360 test."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 1437/360 split of load_digits(), seed 0.'}

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships with scikit-learn.
    return {'train': self._generate_examples('train'), 'test': self._generate_examples('test')}

  def _generate_examples(self, split):
    images, labels = load_split(split)
    for row, (image, label) in enumerate(zip(images, labels)):
      yield row, {'image': image, 'label': int(label)}
