"""Synchronised BatchNorm costs one all-reduce per layer, and BN groups never straddle devices.

The counts come from the HLO XLA compiles for an 8-device CPU mesh: what a TPU
or GPU run would exchange between devices, op for op.
"""

import re

import jax
import jax.numpy as jnp
import pytest

from configs import default
from se_flax import check
from se_flax import models
from se_flax.errors import ConfigError
from se_flax.train import optim
from se_flax.train import parallel
from se_flax.train import state as state_lib
from se_flax.train import step as step_lib

BATCH = 16  # 2 examples per device on the 8-device mesh
SHAPE = (32, 32, 3)


def _config(bn_group_size=0, **model):
  config = default.get_base_config()
  config.dataset.name = 'cifar10'
  config.dataset.image_size = 32
  config.model.name = 'se_cifar_resnet20'
  config.batch_size = config.eval_batch_size = BATCH
  config.bn_group_size = bn_group_size
  config.model.update(model)
  return config


def _model(bn_group_size):
  # depth 8: one unit per stage, 7 BatchNorms; the smallest SE-ResNet, quick to compile.
  return models.create_model('se_cifar_resnet20', 10, depth=8, bn_group_size=bn_group_size)


def _count(hlo, op):
  return len(re.findall(rf'\b{op}(?:-start)?\(', hlo))


def _batch_norms(variables):
  paths = jax.tree_util.tree_flatten_with_path(variables['batch_stats'])[0]
  return sum(1 for path, _ in paths if path[-1].key == 'mean')


def _compiled_train_step(model, config, mesh):
  tx, schedule = optim.create_optimizer(config, steps_per_epoch=10, total_steps=100)
  state = state_lib.create_train_state(model, jax.random.PRNGKey(0), (1,) + SHAPE, tx, mesh)
  train = step_lib.make_train_step(model, config, mesh, schedule, 10)
  batch = {
      'image': jax.ShapeDtypeStruct((BATCH,) + SHAPE, jnp.uint8),
      'label': jax.ShapeDtypeStruct((BATCH,), jnp.int32)
  }
  return state, train.lower(state, batch).compile().as_text()


def test_forward_pass_has_one_all_reduce_per_batch_norm(mesh8):
  model = _model(0)
  state, _ = _compiled_train_step(model, _config(), mesh8)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  forward = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']),
                    in_shardings=(parallel.replicated(mesh8), parallel.batch_sharding(mesh8)))
  hlo = forward.lower(variables, jax.ShapeDtypeStruct((BATCH,) + SHAPE, jnp.float32)).compile()
  layers = _batch_norms(variables)
  assert layers == 7
  # The mean and the mean of squares travel together: one all-reduce, not two, per layer.
  assert _count(hlo.as_text(), 'all-reduce') == layers
  assert _count(hlo.as_text(), 'all-gather') == 0


# A whole device's examples (2), and groups spanning four devices (8).
@pytest.mark.parametrize('group_size', [2, 8])
def test_allowed_bn_groups_compile_to_a_step_without_all_gather(mesh8, group_size):
  assert group_size in check.bn_group_sizes(BATCH, 8)
  _, hlo = _compiled_train_step(_model(group_size), _config(group_size), mesh8)
  assert _count(hlo, 'all-reduce') > 0  # the gradients are still summed over devices
  assert _count(hlo, 'all-gather') == 0 and _count(hlo, 'all-to-all') == 0


def test_bn_group_sizes_are_within_or_whole_devices():
  assert check.bn_group_sizes(16, 8) == [1, 2, 4, 8, 16]
  # 6 per device: 4 divides the batch of 48 but would straddle two devices.
  assert check.bn_group_sizes(48, 8) == [1, 2, 3, 6, 12, 24, 48]
  assert check.bn_group_sizes(12, 1) == [1, 2, 3, 4, 6, 12]


def test_check_refuses_a_group_that_straddles_devices():
  config = _config(bn_group_size=4)
  config.batch_size = config.eval_batch_size = 48
  with pytest.raises(
      ConfigError,
      match=re.escape('config.bn_group_size=4 must be 0 (whole-batch statistics) or a divisor of '
                      'config.batch_size=48')) as info:
    check.check_config(config, num_devices=8, num_processes=1)
  assert 'allowed: [0, 1, 2, 3, 6, 12, 24, 48]' in str(info.value)
  config.bn_group_size = 6
  check.check_config(config, num_devices=8, num_processes=1)
