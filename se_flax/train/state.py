"""The training state: step, params, batch_stats, opt_state and the dropout key.

Parameters are created inside `jax.jit` with replicated `out_shardings`, so they
are born on the mesh and never pass through one host's memory as a whole.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax
from flax import struct
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import optax

from se_flax.train import parallel

PyTree = Any


class TrainState(struct.PyTreeNode):
  """Everything a checkpoint holds; `tx` is static and rebuilt from the config.

  Attributes:
    step: int32 scalar, the number of updates applied so far.
    params: the `params` collection.
    batch_stats: the BatchNorm running statistics (`{}` for models without BN).
    opt_state: the optax state of `tx`.
    rng: a raw uint32[2] PRNG key. Dropout in step `s` uses
      `fold_in(rng, s)`, so the key never changes and a resumed run draws the
      same masks as an uninterrupted one. Raw (not typed) keys keep the
      checkpoint a plain tree of numeric arrays.
    tx: the optimizer; not a pytree leaf.
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  rng: jax.Array
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  def apply_gradients(self, *, grads: PyTree, **changes) -> 'TrainState':
    """One optimizer update; `changes` replaces other fields (e.g. `batch_stats`)."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state, **changes)


def _init_fn(model: nn.Module, input_shape: Sequence[int], tx: optax.GradientTransformation,
             input_dtype: Any):
  """A function of the key that builds the state; traced by jit and eval_shape alike."""

  def init(rng: jax.Array) -> TrainState:
    params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    variables = model.init({'params': params_rng, 'dropout': dropout_rng},
                           jnp.zeros(tuple(input_shape), input_dtype), train=False)
    variables = flax.core.unfreeze(variables)
    params = variables['params']
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get('batch_stats', {}),
        opt_state=tx.init(params),
        rng=state_rng,
        tx=tx,
    )

  return init


def create_train_state(model: nn.Module, rng: jax.Array, input_shape: Sequence[int],
                       tx: optax.GradientTransformation, mesh: Mesh,
                       input_dtype: Any = jnp.float32) -> TrainState:
  """Initialises the model and optimizer directly onto `mesh`, replicated.

  Args:
    model: a Linen module called as `model(images, train=...)`.
    rng: a raw PRNG key (`jax.random.PRNGKey(config.seed)`).
    input_shape: shape of a dummy batch, batch dimension included, e.g.
      `(1, 224, 224, 3)`; the batch size does not affect the parameters.
    tx: the optimizer.
    mesh: the device mesh; the state is replicated over it.
    input_dtype: dtype of the dummy batch.

  Returns:
    The initial `TrainState`, step 0.
  """
  init = jax.jit(_init_fn(model, input_shape, tx, input_dtype),
                 out_shardings=parallel.replicated(mesh))
  return init(rng)


def abstract_train_state(model: nn.Module, input_shape: Sequence[int],
                         tx: optax.GradientTransformation, mesh: Mesh,
                         input_dtype: Any = jnp.float32) -> TrainState:
  """The state's shapes, dtypes and (replicated) shardings, without computing it.

  This is the restore target: a checkpoint is read straight onto the current
  mesh's shardings, whatever mesh wrote it.
  """
  shapes = jax.eval_shape(_init_fn(model, input_shape, tx, input_dtype),
                          jax.random.PRNGKey(0))
  sharding = parallel.replicated(mesh)
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def is_finite(state: TrainState) -> bool:
  """Whether every float in params, batch_stats and opt_state is finite (this process's replica).

  The guard before every save: no checkpoint holds a NaN or Inf (docs/failures.md).
  """
  for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      if not np.isfinite(np.asarray(leaf.addressable_data(0))).all():
        return False
  return True
