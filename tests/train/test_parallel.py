"""Mesh, shardings, global batches and distributed start-up detection."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from se_flax.train import parallel
from tests.train.tiny import make_batch, mesh_of

_CLUSTER_VARS = ('JAX_COORDINATOR_ADDRESS', 'SLURM_NTASKS', 'SLURM_STEP_NUM_TASKS',
                 'MEGASCALE_COORDINATOR_ADDRESS', 'TPU_WORKER_HOSTNAMES',
                 'TPU_PROCESS_ADDRESSES', 'CLOUD_TPU_TASK_ID', 'TPU_WORKER_ID')


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


def test_check_batch_divisible_names_the_field(mesh8):
  parallel.check_batch_divisible(16, mesh8)
  with pytest.raises(ValueError) as info:
    parallel.check_batch_divisible(12, mesh8)
  message = str(info.value)
  assert 'config.batch_size=12' in message
  assert '(8)' in message and 'processes (1)' in message
  with pytest.raises(ValueError, match='config.eval_batch_size=4'):
    parallel.check_batch_divisible(4, mesh8, field='config.eval_batch_size')


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
