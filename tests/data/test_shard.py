"""shard.eval_layout, the padded evaluation layout both loaders follow, against tfds's reading."""

import math

import numpy as np
import pytest
import tensorflow_datasets as tfds

from se_flax.data import shard


def _read(builder, split):
  data = tfds.as_numpy(builder.as_dataset(split, batch_size=-1, shuffle_files=False))
  return data['image'], data['label']


# 360 over 3 evenly; 50 over 3 unevenly (17, 17, 16); 7 over 4 with a one-row batch each.
@pytest.mark.parametrize('split, count, batch', [('test', 1, 64), ('test', 3, 63),
                                                 ('test[:50]', 3, 12), ('test[:7]', 4, 4)])
def test_every_example_is_one_process_row_in_order_and_every_process_has_the_same_batches(
    digits_dir, split, count, batch):
  builder = tfds.builder('digits', data_dir=digits_dir)
  layouts = [shard.eval_layout(builder, split, batch, index, count) for index in range(count)]
  parts = [_read(builder, layout.split) for layout in layouts]
  images, labels = _read(builder, split)
  np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), images)
  np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), labels)
  reals = [layout.num_real for layout in layouts]
  assert reals == [len(p[1]) for p in parts]
  # Even: the first processes hold one more when the split does not divide.
  assert reals == sorted(reals, reverse=True) and reals[0] - reals[-1] <= 1
  local = batch // count
  assert {(layout.local_batch, layout.num_batches) for layout in layouts
         } == {(local, math.ceil(reals[0] / local))}
  assert all(layout.num_rows >= layout.num_real for layout in layouts)
