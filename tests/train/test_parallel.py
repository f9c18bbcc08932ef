"""Mesh, shardings, global batches and distributed start-up detection."""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from se_flax.train import parallel
from tests.train.tiny import make_batch
from tests.train.tiny import mesh_of

_CLUSTER_VARS = ('JAX_COORDINATOR_ADDRESS', 'SLURM_NTASKS', 'SLURM_STEP_NUM_TASKS',
                 'MEGASCALE_COORDINATOR_ADDRESS', 'TPU_WORKER_HOSTNAMES', 'TPU_PROCESS_ADDRESSES',
                 'CLOUD_TPU_TASK_ID', 'TPU_WORKER_ID')


def test_mesh_has_data_and_model_axes(mesh8):
  assert mesh8.axis_names == ('data', 'model')
  assert mesh8.devices.shape == (8, 1)
  assert set(mesh8.devices.flat) == set(jax.devices())
  assert mesh_of(4).devices.shape == (4, 1)


def test_global_batch_is_sharded_over_data(mesh8):
  local = make_batch(batch_size=16)
  batch = parallel.global_batch(local, mesh8)
  for key, value in batch.items():
    assert value.shape == local[key].shape
    assert value.sharding == NamedSharding(mesh8, P('data'))
    np.testing.assert_array_equal(np.asarray(value), local[key])
    # Each device holds its own two rows.
    assert {s.data.shape[0] for s in value.addressable_shards} == {2}
  assert parallel.replicated(mesh8).spec == P()


def test_single_process_environment_does_not_initialize(monkeypatch):
  for name in _CLUSTER_VARS:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('SLURM_NTASKS', '1')
  assert parallel.multi_process_environment() is None
  assert parallel.maybe_initialize_distributed() is False
  assert not jax.distributed.is_initialized()


@pytest.mark.parametrize('name,value,expected', [
    ('SLURM_NTASKS', '4', 'SLURM'),
    ('JAX_COORDINATOR_ADDRESS', '10.0.0.1:1234', 'JAX_COORDINATOR_ADDRESS'),
    ('TPU_WORKER_HOSTNAMES', 'host-0,host-1', 'TPU pod'),
    ('MEGASCALE_COORDINATOR_ADDRESS', '10.0.0.2', 'TPU multislice'),
])
def test_multi_process_environments_are_detected(monkeypatch, name, value, expected):
  for var in _CLUSTER_VARS:
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv(name, value)
  assert parallel.multi_process_environment().startswith(expected)


class _Counting:
  """Local batches 0, 1, 2, ...; records how many were pulled; `skipped` grows by one per batch."""

  def __init__(self, n):
    self._batches = [make_batch(batch_size=16, seed=i) for i in range(n)]
    self.pulled = self.skipped = 0

  def __iter__(self):
    return self

  def __next__(self):
    if self.pulled == len(self._batches):
      raise StopIteration
    self.pulled += 1
    self.skipped = self.pulled
    return self._batches[self.pulled - 1]


def test_prefetch_to_device_keeps_order_and_sharding_and_runs_ahead(mesh8):
  source = _Counting(5)
  prefetched = parallel.prefetch_to_device(source, mesh8, size=2)
  out = []
  for i, batch in enumerate(prefetched):
    # Batch i is handed out with batches i+1 and i+2 already pulled and on their way.
    assert source.pulled == min(i + 3, 5)
    # Drops are reported as of the batch handed out, not of the queued ones.
    assert prefetched.skipped == i + 1
    for key, value in batch.items():
      assert isinstance(value, jax.Array)
      assert value.sharding == NamedSharding(mesh8, P('data'))
      assert {s.data.shape[0] for s in value.addressable_shards} == {2}
    out.append(jax.device_get(batch))
  assert len(out) == 5
  for i, batch in enumerate(out):
    expected = make_batch(batch_size=16, seed=i)
    for key in expected:
      np.testing.assert_array_equal(batch[key], expected[key])
