"""What a run builds from its config before the first step: data facts, mesh, model, optimizer.

The config was checked once, by `se_flax.check.check_config`, before the
command imported TensorFlow; nothing here checks it again. What can only be
known from the data on disk (split sizes, hence the step counts) raises
errors.ConfigError or errors.DataError where it is read.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
from jax.sharding import Mesh
import ml_collections
import optax

from se_flax import models
from se_flax.data import feed
from se_flax.train import init_from
from se_flax.train import optim
from se_flax.train import parallel
from se_flax.train import state as state_lib


@dataclasses.dataclass(frozen=True)
class Run:
  """Everything a run builds from its config before the first step."""
  config: ml_collections.ConfigDict
  workdir: str
  info: feed.DatasetInfo
  mesh: Mesh
  model: nn.Module
  steps_per_epoch: int
  total_steps: int
  eval_every: int  # steps between evaluations (config.eval_every_steps=-1: an epoch)
  tx: optax.GradientTransformation
  schedule: Callable[[Any], jax.Array]
  input_shape: tuple  # a batch of one, for initialisation

  def abstract_state(self) -> state_lib.TrainState:
    """The state's shapes and shardings: the target a checkpoint is restored onto.

    With config.ema.decay > 0 it holds the EMA's arrays too.
    """
    target = state_lib.abstract_train_state(self.model, self.input_shape, self.tx, self.mesh)
    return self._with_ema(target)

  def fresh_state(self) -> state_lib.TrainState:
    """Step 0, initialised from config.seed (no EMA: see `initial_state`)."""
    return state_lib.create_train_state(self.model, jax.random.PRNGKey(self.config.seed),
                                        self.input_shape, self.tx, self.mesh)

  def initial_state(self) -> state_lib.TrainState:
    """Step 0 of training: config.seed's initialisation, then config.init_from's weights if set.

    The EMA starts from the weights step 0 ends with, imported ones included.
    """
    state = self.fresh_state()
    if self.config.get('init_from'):
      state = init_from.load_pretrained(state, self.config.init_from, self.mesh)
    return self._with_ema(state)

  def _with_ema(self, state):
    return state_lib.with_ema(state) if self.config.ema.decay > 0 else state


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """config.num_train_steps when set, else config.num_epochs (rounded up, at least one step)."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return max(1, int(math.ceil(config.num_epochs * steps_per_epoch)))


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Reads the data set's facts (preparing it if needed) and builds the mesh, model and optimizer."""
  info = feed.get_info(config.dataset)
  steps_per_epoch = feed.steps_per_epoch(info, config.batch_size)
  steps = total_steps(config, steps_per_epoch)
  tx, schedule = optim.create_optimizer(config, steps_per_epoch, steps)
  return Run(
      config=config, workdir=workdir, info=info, mesh=parallel.create_mesh(),
      model=models.from_config(config, info.num_classes), steps_per_epoch=steps_per_epoch,
      total_steps=steps,
      eval_every=(config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch),
      tx=tx, schedule=schedule, input_shape=(1,) + tuple(info.image_shape))
