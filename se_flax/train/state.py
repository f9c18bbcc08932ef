"""The training state: step, params, batch_stats, opt_state, the dropout key and the weights' EMA.

Parameters are created inside `jax.jit` with replicated `out_shardings`, so they
are born on the mesh and never pass through one host's memory as a whole.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import optax

from se_flax.train import parallel

PyTree = Any


@jax.tree_util.register_pytree_with_keys_class
@dataclasses.dataclass(frozen=True)
class TrainState:
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
    ema_params, ema_batch_stats: the exponential moving average of `params`
      and `batch_stats` (config.ema.decay > 0, see `with_ema`), or None.

  A pytree like a flax struct dataclass (the same leaf paths, `tx` static),
  except that without an EMA its two fields are not children at all: the tree,
  and so every checkpoint, is then exactly the one written before the EMA
  existed, and those checkpoints restore unchanged.
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  rng: jax.Array
  tx: optax.GradientTransformation
  ema_params: Optional[PyTree] = None
  ema_batch_stats: Optional[PyTree] = None

  _FIELDS = ('step', 'params', 'batch_stats', 'opt_state', 'rng')
  _EMA_FIELDS = ('ema_params', 'ema_batch_stats')

  def tree_flatten_with_keys(self):
    names = self._FIELDS + (self._EMA_FIELDS if self.has_ema else ())
    children = [(jax.tree_util.GetAttrKey(name), getattr(self, name)) for name in names]
    return children, (self.tx, self.has_ema)

  @classmethod
  def tree_unflatten(cls, aux, children):
    tx, has_ema = aux
    names = cls._FIELDS + (cls._EMA_FIELDS if has_ema else ())
    return cls(tx=tx, **dict(zip(names, children)))

  def replace(self, **changes) -> 'TrainState':
    return dataclasses.replace(self, **changes)

  @property
  def has_ema(self) -> bool:
    return self.ema_params is not None

  def apply_gradients(self, *, grads: PyTree, **changes) -> 'TrainState':
    """One optimizer update; `changes` replaces other fields (e.g. `batch_stats`)."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state, **changes)

  def update_ema(self, decay: float) -> 'TrainState':
    """`ema = decay * ema + (1 - decay) * current` for params and batch_stats (no-op without EMA).

    Called after every applied update, so the average weighs update k by
    `(1 - decay) * decay ** (n - k)` and the initial weights by `decay ** n`.
    """
    if not self.has_ema:
      return self

    def average(ema, new):
      return (decay * ema + (1.0 - decay) * new).astype(ema.dtype)

    return self.replace(
        ema_params=jax.tree.map(average, self.ema_params, self.params),
        ema_batch_stats=jax.tree.map(average, self.ema_batch_stats, self.batch_stats))

  def ema_weights(self) -> 'TrainState':
    """This state with the averaged weights in place of the trained ones, for evaluation."""
    return self.replace(params=self.ema_params, batch_stats=self.ema_batch_stats)


def with_ema(state: TrainState) -> TrainState:
  """`state` holding an EMA that starts at its current weights (step 0: the initial ones).

  Works on a concrete state (fresh, or after imported weights) and on the
  abstract one a checkpoint is restored onto. The concrete arrays are copies,
  so the train step can donate params and EMA alike.
  """

  def copy(x):
    return x if isinstance(x, jax.ShapeDtypeStruct) else jnp.copy(x)

  return state.replace(ema_params=jax.tree.map(copy, state.params),
                       ema_batch_stats=jax.tree.map(copy, state.batch_stats))


def _init_fn(model: nn.Module, input_shape: Sequence[int], tx: optax.GradientTransformation,
             input_dtype: Any):
  """A function of the key that builds the state; traced by jit and eval_shape alike."""

  def init(rng: jax.Array) -> TrainState:
    params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    variables = model.init({
        'params': params_rng,
        'dropout': dropout_rng
    }, jnp.zeros(tuple(input_shape), input_dtype), train=False)
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
  shapes = jax.eval_shape(_init_fn(model, input_shape, tx, input_dtype), jax.random.PRNGKey(0))
  sharding = parallel.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def is_finite(state: TrainState) -> bool:
  """Whether every float of the state, EMA included, is finite (this process's replica).

  The guard before every save: no checkpoint holds a NaN or Inf (docs/failures.md).
  """
  ema = (getattr(state, 'ema_params', None), getattr(state, 'ema_batch_stats', None))
  for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state, ema)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      if not np.isfinite(np.asarray(leaf.addressable_data(0))).all():
        return False
  return True
