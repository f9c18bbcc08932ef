"""main.py unchanged, observed: the grain loader's training rows and whether TensorFlow was imported.

Usage: like main.py. With GRAIN_PROBE_INDICES=FILE in the environment, every
training batch the grain loader yields appends one line to FILE: the JSON list
of its rows' example indices (the loader's `indices`). Batches are read ahead
of the steps (parallel.prefetch_to_device), so FILE may hold a few more lines
than the run took steps. The last line of stdout is `tensorflow imported:
True|False`, whatever the run's exit code.
"""

import json
import os
import sys

from absl import app

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import main  # pylint: disable=g-import-not-at-top,wrong-import-position  (defines the flags)
from se_flax.data import grain_source  # pylint: disable=g-import-not-at-top,wrong-import-position

_train_batches = grain_source.train_batches


class _Recorded:
  """The loader's iterator, writing each batch's example indices as it passes them on."""

  def __init__(self, batches, path):
    self._batches, self._path = batches, path

  @property
  def skipped(self):
    return self._batches.skipped

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._batches)
    with open(self._path, 'a', encoding='utf-8') as f:
      f.write(json.dumps(self._batches.indices.tolist()) + '\n')
    return batch


def train_batches(*args, **kwargs):
  return _Recorded(_train_batches(*args, **kwargs), os.environ['GRAIN_PROBE_INDICES'])


if __name__ == '__main__':
  main.runtime.setup()
  if os.environ.get('GRAIN_PROBE_INDICES'):
    grain_source.train_batches = train_batches
  try:
    app.run(main.main, flags_parser=main._parse_flags)  # pylint: disable=protected-access
  finally:
    print('tensorflow imported:', any(m.split('.')[0] == 'tensorflow' for m in sys.modules),
          flush=True)
