"""CIFAR-10 through tfds's own cifar10 builder (random images in the real binary format)."""

import numpy as np
import pytest

from se_flax.data import datasets
from se_flax.data import pipeline
from tests.data.dataset_configs import dataset_config


def _pixels(images):
  if images.dtype == np.uint8:  # train batches
    return images
  images = np.asarray(images, np.float64) * datasets.CIFAR10_STD + datasets.CIFAR10_MEAN
  return np.round(images).astype(np.uint8)


def _config(data_dir, **overrides):
  return dataset_config('cifar10', data_dir, image_size=32, eval_split='test', **overrides)


def test_info(cifar10):
  _, data_dir = cifar10
  assert pipeline.get_info(_config(data_dir)) == pipeline.DatasetInfo('cifar10', 10, 20, 6,
                                                                      (32, 32, 3))


@pytest.mark.parametrize('cache', [True, False])
def test_an_epoch_is_every_image_padded_cropped_and_maybe_flipped(cifar10, cache):
  (images, labels), data_dir = cifar10[0]['train'], cifar10[1]
  padded = np.pad(images, [(0, 0), (4, 4), (4, 4), (0, 0)])
  candidates = {}
  for row, (image, label) in enumerate(zip(padded, labels)):
    for y in range(9):
      for x in range(9):
        window = image[y:y + 32, x:x + 32]
        candidates[window.tobytes(), int(label)] = (row, False)
        candidates[window[:, ::-1].tobytes(), int(label)] = (row, True)
  cfg = _config(data_dir, cache=cache, shuffle_buffer=7)
  iterator = pipeline.train_batches(cfg, global_batch_size=10, seed=0)
  batches = [next(iterator) for _ in range(4)]  # Two epochs of 20.
  assert all(b['image'].shape == (10, 32, 32, 3) for b in batches)
  for epoch in (batches[:2], batches[2:]):
    out = _pixels(np.concatenate([b['image'] for b in epoch]))
    out_labels = np.concatenate([b['label'] for b in epoch])
    found = [candidates.get((image.tobytes(), int(label))) for image, label in zip(out, out_labels)]
    assert all(found), 'not a padded crop (or its mirror) of a train image of its class'
    assert sorted(row for row, _ in found) == list(range(20))
  flips = [
      flip for b in batches for image, label in zip(_pixels(b['image']), b['label'])
      for _, flip in [candidates[image.tobytes(), int(label)]]
  ]
  assert 0 < sum(flips) < len(flips)


@pytest.mark.parametrize('cache', [True, False])
def test_eval_is_the_test_images_unchanged(cifar10, cache):
  (images, labels), data_dir = cifar10[0]['test'], cifar10[1]
  batches = list(pipeline.eval_batches(_config(data_dir, cache=cache), global_batch_size=4))
  assert len(batches) == 2
  mask = np.concatenate([b['mask'] for b in batches]) == 1
  out = _pixels(np.concatenate([b['image'] for b in batches])[mask])
  out_labels = np.concatenate([b['label'] for b in batches])[mask]
  assert sorted(zip(
      (i.tobytes() for i in out),
      out_labels.tolist())) == sorted(zip((i.tobytes() for i in images), labels.tolist()))


def test_resume(cifar10):
  _, data_dir = cifar10
  cfg = _config(data_dir, cache=False, shuffle_buffer=7)
  run = lambda **kw: pipeline.train_batches(cfg, global_batch_size=6, seed=2, **kw)
  reference = run()
  batches = [next(reference) for _ in range(6)]
  resumed = run(start_step=3)  # 18 examples in: two into the second epoch follow.
  for expected in batches[3:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['image'], expected['image'])
    np.testing.assert_array_equal(got['label'], expected['label'])
