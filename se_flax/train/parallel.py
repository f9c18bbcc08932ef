"""Distributed start-up, the device mesh, and global arrays from per-process batches.

One code path for one CPU, eight GPUs and a TPU pod: `jax.jit` with explicit
`NamedSharding`s over a `Mesh`. The mesh is two-dimensional, `('data',
'model')`, with the model axis of size 1 today, so that tensor parallelism can
be added later by resizing the mesh instead of rewriting every sharding; all
shardings here name only the `data` axis and are replicated over `model`.
"""

from __future__ import annotations

import collections
import os
from typing import Iterator, Mapping, Optional, Sequence

from absl import logging
import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from se_flax import environment
from se_flax import errors

DATA_AXIS = 'data'
MODEL_AXIS = 'model'

# The two timeouts of jax.distributed, their defaults and their environment overrides (for
# schedulers, and tests, that want a lost host noticed sooner) are se_flax/environment.py's.
HEARTBEAT_TIMEOUT_ENV = 'SE_FLAX_HEARTBEAT_TIMEOUT_SECONDS'
INITIALIZATION_TIMEOUT_ENV = 'SE_FLAX_INITIALIZATION_TIMEOUT_SECONDS'


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  try:
    return int(value) if value else None
  except ValueError:
    return None


def multi_process_environment() -> Optional[str]:
  """Names the scheduler that launched several processes, or None.

  Only environments that imply more than one process count: a one-task SLURM
  allocation or a single-host TPU VM runs fine without `jax.distributed`, and
  initialising it there would wait for peers that never come.
  """
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return 'JAX_COORDINATOR_ADDRESS'
  if (_env_int('SLURM_NTASKS') or 1) > 1 or (_env_int('SLURM_STEP_NUM_TASKS') or 1) > 1:
    return 'SLURM'
  if os.environ.get('MEGASCALE_COORDINATOR_ADDRESS'):
    return 'TPU multislice'
  for name in ('TPU_WORKER_HOSTNAMES', 'TPU_PROCESS_ADDRESSES'):
    if ',' in os.environ.get(name, ''):
      return f'TPU pod ({name})'
  if (_env_int('CLOUD_TPU_TASK_ID') or 0) > 0 or (_env_int('TPU_WORKER_ID') or 0) > 0:
    return 'TPU pod (worker id)'
  return None


def maybe_initialize_distributed(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    *,
    heartbeat_timeout_seconds: Optional[int] = None,
    initialization_timeout: Optional[int] = None,
) -> bool:
  """Initialises `jax.distributed` when flags or the environment ask for it.

  Must run before any other jax call touches the devices. Safe to call twice.

  Args:
    coordinator_address: host:port of process 0; when given, initialisation
      always happens (with `num_processes` and `process_id`).
    num_processes: total number of processes; default `$JAX_NUM_PROCESSES`,
      else detected by jax (SLURM, TPU).
    process_id: this process's index; default `$JAX_PROCESS_ID`, else detected.
    heartbeat_timeout_seconds: after this many seconds without a heartbeat a
      peer counts as lost and the others fail rather than hang; default
      `$SE_FLAX_HEARTBEAT_TIMEOUT_SECONDS`, else 100 (se_flax/environment.py).
      A process whose peer is killed outright usually fails sooner, at its
      next collective (the peer's sockets close); the timeout bounds the wait
      when a host vanishes without closing them.
    initialization_timeout: seconds to wait for every peer at start-up;
      default `$SE_FLAX_INITIALIZATION_TIMEOUT_SECONDS`, else 300.

  Returns:
    True if `jax.distributed` is initialised when this returns.

  Raises:
    errors.ConfigError: a timeout or process flag that cannot work.
    errors.LostProcessError: a peer or the coordinator never answered.
  """
  if jax.distributed.is_initialized():
    return True
  source = 'flags' if coordinator_address else multi_process_environment()
  if source is None:
    return False
  logging.info('Initialising jax.distributed (detected from %s).', source)
  if num_processes is None:
    num_processes = _env_int('JAX_NUM_PROCESSES')
  if process_id is None:
    process_id = _env_int('JAX_PROCESS_ID')
  if heartbeat_timeout_seconds is None:
    heartbeat_timeout_seconds = environment.seconds(HEARTBEAT_TIMEOUT_ENV)
  if initialization_timeout is None:
    initialization_timeout = environment.seconds(INITIALIZATION_TIMEOUT_ENV)
  try:
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds,
    )
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e
  except RuntimeError as e:
    raise errors.LostProcessError(
        f'could not start the multi-process run (coordinator '
        f'{coordinator_address or "from the environment"}): {str(e).splitlines()[0][:300]}. '
        'Start every process with the same --coordinator_address and --num_processes, each '
        'with its own --process_id.') from e
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices.',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


# What jax, gloo and the coordination service say when a peer has gone.
_LOST_PROCESS_MARKERS = ('Gloo', 'gloo', 'heartbeat', 'Connection reset', 'Connection closed',
                         'Broken pipe', 'UNAVAILABLE', 'DEADLINE_EXCEEDED', 'Barrier failed',
                         'coordination service')


def is_lost_process_error(error: BaseException) -> bool:
  """Whether `error`, raised in a multi-process run, means that another process is gone."""
  if not jax.distributed.is_initialized() or jax.process_count() < 2:
    return False
  text = str(error)
  return isinstance(error, Exception) and any(m in text for m in _LOST_PROCESS_MARKERS)


def create_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A `(n, 1)` mesh with axes `('data', 'model')` over `devices` (default: all)."""
  if devices is None:
    try:
      # Orders devices by their physical topology (ICI rings on TPU).
      grid = mesh_utils.create_device_mesh((jax.device_count(), 1))
    except (ValueError, NotImplementedError, AssertionError) as e:
      logging.warning('create_device_mesh failed (%s); using jax.devices() order.', e)
      grid = np.asarray(jax.devices(), dtype=object).reshape(-1, 1)
  else:
    grid = np.asarray(devices, dtype=object).reshape(-1, 1)
  return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimizer state, metrics)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """The leading (batch) dimension is split over the `data` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this process's slice of the batch into global arrays sharded over `data`.

  Each process passes the rows it read (its `tfds.split_for_jax_process`
  slice); the global batch is their concatenation in process order.
  """
  sharding = batch_sharding(mesh)
  return {
      key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
      for key, value in local_batch.items()
  }


class DevicePrefetcher:
  """Global batches of a per-process iterator, `size` of them already on their way to the devices.

  `jax.make_array_from_process_local_data` starts an asynchronous transfer and
  returns, so while step n runs the next batches are being copied: the step
  never waits for the host-to-device link, only for the host pipeline. Order
  and sharding are those of `global_batch`.

  `skipped` is the underlying iterator's count of dropped examples as of the
  newest batch handed out, not of the ones still queued, so a checkpoint at
  step k records the drops of batches 1..k only (exact resume).
  """

  def __init__(self, iterator: Iterator[Mapping[str, np.ndarray]], mesh: Mesh, size: int = 2):
    if size < 1:
      raise ValueError(f'size={size} must be >= 1')
    self._it, self._mesh, self._size = iterator, mesh, size
    self._queue: collections.deque = collections.deque()
    self.skipped = int(getattr(iterator, 'skipped', 0))

  def __iter__(self) -> 'DevicePrefetcher':
    return self

  def _fill(self) -> None:
    while len(self._queue) < self._size:
      try:
        local = next(self._it)
      except StopIteration:
        return
      self._queue.append((global_batch(local, self._mesh), getattr(self._it, 'skipped', 0)))

  def __next__(self) -> dict[str, jax.Array]:
    self._fill()
    if not self._queue:
      raise StopIteration
    batch, self.skipped = self._queue.popleft()
    self._fill()  # the next transfers start before the caller's step is dispatched
    return batch


def prefetch_to_device(iterator: Iterator[Mapping[str, np.ndarray]], mesh: Mesh,
                       size: int = 2) -> DevicePrefetcher:
  """`iterator`'s batches as global arrays on `mesh`, `size` batches transferred ahead."""
  return DevicePrefetcher(iterator, mesh, size)
