"""Shared pieces for the training tests: a tiny BN model, a config, batches, meshes."""

import functools
import os
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from se_flax.train import optim
from se_flax.train import parallel
from se_flax.train import state as state_lib
from se_flax.train import step as step_lib

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 3)


class TinyNet(nn.Module):
  """conv -> BatchNorm -> relu -> global pool -> dropout -> dense: every variable kind."""
  num_classes: int = NUM_CLASSES
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
    x = nn.relu(x).mean(axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def make_config(**overrides):
  config = default.get_base_config()
  config.batch_size = 16
  config.eval_batch_size = 16
  config.learning_rate = 0.4
  config.lr_reference_batch = 16
  config.optimizer.weight_decay = 1e-4
  config.optimizer.decay_bn_and_bias = False
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def make_batch(batch_size=16, seed=0, num_classes=NUM_CLASSES):
  rng = np.random.RandomState(seed)
  return {
      'image': rng.normal(size=(batch_size,) + IMAGE_SHAPE).astype(np.float32),
      'label': rng.randint(0, num_classes, size=batch_size).astype(np.int32),
  }


def mesh_of(n):
  return parallel.create_mesh(jax.devices()[:n])


@functools.lru_cache(maxsize=None)
def _initial_state(num_classes):
  # Initialisation compiles the PRNG (1-2 s on CPU), so tests share one state per
  # head size and move it to other meshes; dropout adds no variables.
  model = TinyNet(num_classes=num_classes)
  tx, schedule = optim.create_optimizer(make_config(), steps_per_epoch=10, total_steps=100)
  state = state_lib.create_train_state(model, jax.random.PRNGKey(0), (1,) + IMAGE_SHAPE, tx,
                                       mesh_of(8))
  return schedule, state


@functools.lru_cache(maxsize=None)
def _train_step(n_devices, num_classes, dropout_rate, overrides):
  schedule, _ = _initial_state(num_classes)
  model = TinyNet(num_classes=num_classes, dropout_rate=dropout_rate)
  config = make_config(**dict(overrides))
  return model, config, step_lib.make_train_step(model, config, mesh_of(n_devices), schedule,
                                                 num_classes)


def tiny_setup(n_devices=8, *, num_classes=NUM_CLASSES, dropout_rate=0.0, **overrides):
  """A fresh copy of the initial TinyNet state on an n-device mesh, and its jitted train step.

  The optimizer is always `make_config()`'s; `overrides` change the step's config
  (nan_policy, label_smoothing).
  """
  # While mutmut records which test calls what (MUTANT_UNDER_TEST=stats) nothing is shared: a
  # step built once would tie the code that builds it (shardings, donation) to whichever test
  # came first. Each mutant then runs in a process of its own, where sharing is harmless.
  fresh = os.environ.get('MUTANT_UNDER_TEST') == 'stats'
  initial_state, train_step = ((_initial_state.__wrapped__, _train_step.__wrapped__) if fresh else
                               (_initial_state, _train_step))
  schedule, state = initial_state(num_classes)
  model, config, train = train_step(n_devices, num_classes, dropout_rate,
                                    tuple(sorted(overrides.items())))
  mesh = mesh_of(n_devices)
  # The train step donates its input, so each test gets its own buffers.
  state = jax.device_put(jax.tree.map(jnp.copy, state), parallel.replicated(mesh))
  return types.SimpleNamespace(model=model, schedule=schedule, config=config, mesh=mesh,
                               train=train, state=state)
