"""How a global batch splits over the processes of a run: one rule for every data source.

Each process reads `local_batch` examples of every global batch; the tf.data
pipeline (pipeline.py), the grain loader (grain_source.py), the generator
(synthetic.py) and the upfront config check (se_flax/check.py) all ask here,
so the rule and its message exist once; the loaders also ask where a resumed
run's stream continues (`start_position`) and which rows of an evaluation
pass are whose (`eval_layout`).
"""

import dataclasses
import os

from se_flax.errors import ConfigError


def process(process_index=None, process_count=None) -> tuple:
  """(index, count) of this process: the arguments given, else JAX's.

  Raises:
    ValueError: an index outside [0, count).
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top  (the data modules import no JAX until used)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} must be in [0, process_count='
                     f'{process_count})')
  return process_index, process_count


def local_batch(global_batch_size: int, process_count: int, name: str = 'global_batch_size') -> int:
  """Examples per process in a global batch of `global_batch_size`.

  Raises:
    ConfigError: the batch is not a positive multiple of the process count;
      the message names the value `name` (the upfront check: 'config.batch_size').
  """
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ConfigError(f'{name}={global_batch_size} is not a positive multiple of the '
                      f'{process_count} processes; each process reads an equal share of every '
                      f'batch: use a multiple of {process_count}')
  return global_batch_size // process_count


def start_position(start_step: int, global_batch_size: int, start_example=None) -> int:
  """Where a run's training stream continues, in examples of the whole run (all processes).

  `start_example` when given (the loop stores it with each checkpoint: the
  examples taken so far, at whatever batch sizes the run had), else
  `start_step` batches of `global_batch_size`.

  Raises:
    ValueError: a negative step or position.
  """
  if start_step < 0:
    raise ValueError(f'start_step={start_step} must be >= 0')
  if start_example is None:
    return start_step * global_batch_size
  if start_example < 0:
    raise ValueError(f'start_example={start_example} must be >= 0')
  return start_example


@dataclasses.dataclass(frozen=True)
class EvalLayout:
  """This process's part of one padded pass over an eval split.

  Rows [0, num_real) of the pass are the examples of `split` in order, the
  rest up to num_batches * local_batch are padding, which the mask hides.
  """
  split: str  # the tfds sub-split this process reads
  num_real: int  # examples in it
  local_batch: int
  num_batches: int  # the same on every process

  @property
  def num_rows(self) -> int:
    return self.num_batches * self.local_batch


def eval_layout(builder, eval_split: str, global_batch_size: int, process_index=None,
                process_count=None) -> EvalLayout:
  """Which examples of `eval_split` (of a tfds `builder`) this process evaluates, and the padding.

  The processes split the examples evenly (tfds.even_splits: the first ones
  get one more when the division is uneven) and all yield ceil(largest slice
  / local batch) batches, so that a multi-process evaluation step never waits
  on a process that has finished; every example is in exactly one process's
  rows. Both loaders lay their eval batches out by this, so they agree batch
  for batch.
  """
  # Here, not at the top: the upfront check imports this module and needs no tfds.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  index, count = process(process_index, process_count)
  local = local_batch(global_batch_size, count)
  splits = tfds.even_splits(eval_split, n=count, drop_remainder=False)
  sizes = [builder.info.splits[s].num_examples for s in splits]
  return EvalLayout(split=splits[index], num_real=sizes[index], local_batch=local,
                    num_batches=max(-(-size // local) for size in sizes))


def cores() -> int:
  """The CPUs this process may run on (a scheduler's CPU set, not the machine's)."""
  return len(os.sched_getaffinity(0)) or 1
