"""main.py in one process, fed the global batches that N processes would read together.

Usage: like main.py, with EMULATED_PROCESSES=N in the environment.

Each process of a multi-process run reads its own slice of the data
(`tfds.split_for_jax_process`), so a one-process run of the same config sees
other batches. Here the input pipeline is asked for every process's slice and
the slices are concatenated in process order, which is how
`jax.make_array_from_process_local_data` lays out the global batch across
processes; everything else is main.py unchanged. The multi-process run and
this one then compute the same thing on the same numbers.
"""

import os
import sys

from absl import app
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import main  # pylint: disable=g-import-not-at-top,wrong-import-position  (defines the flags)
from se_flax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position

PROCESSES = int(os.environ['EMULATED_PROCESSES'])
_train_batches, _eval_batches = pipeline.train_batches, pipeline.eval_batches


def _concatenated(streams):
  for parts in zip(*streams):
    yield {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def train_batches(dataset_cfg, *, global_batch_size, seed, start_step=0, start_example=None,
                  **unused):
  return _concatenated([
      _train_batches(dataset_cfg, global_batch_size=global_batch_size, seed=seed,
                     start_step=start_step, start_example=start_example, process_index=p,
                     process_count=PROCESSES) for p in range(PROCESSES)
  ])


def eval_batches(dataset_cfg, *, global_batch_size, **unused):
  return _concatenated([
      _eval_batches(dataset_cfg, global_batch_size=global_batch_size, process_index=p,
                    process_count=PROCESSES) for p in range(PROCESSES)
  ])


if __name__ == '__main__':
  main.runtime.setup()
  pipeline.train_batches, pipeline.eval_batches = train_batches, eval_batches
  app.run(main.main, flags_parser=main._parse_flags)  # pylint: disable=protected-access
