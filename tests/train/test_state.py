"""TrainState creation on the mesh and its abstract twin."""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from se_flax.train import state as state_lib
from tests.train.tiny import IMAGE_SHAPE
from tests.train.tiny import tiny_setup


def test_state_is_born_replicated_on_the_mesh(mesh8):
  state = tiny_setup().state
  assert int(state.step) == 0
  assert set(state.batch_stats['BatchNorm_0']) == {'mean', 'var'}
  assert state.rng.dtype == np.uint32 and state.rng.shape == (2,)
  for leaf in jax.tree.leaves(state):
    assert leaf.sharding == NamedSharding(mesh8, P()), leaf.sharding


def test_abstract_state_matches_the_real_one(mesh8):
  setup = tiny_setup()
  abstract = state_lib.abstract_train_state(setup.model, (1,) + IMAGE_SHAPE, setup.state.tx, mesh8)
  assert jax.tree.structure(abstract) == jax.tree.structure(setup.state)
  for a, r in zip(jax.tree.leaves(abstract), jax.tree.leaves(setup.state)):
    assert isinstance(a, jax.ShapeDtypeStruct)
    assert (a.shape, a.dtype, a.sharding) == (r.shape, r.dtype, r.sharding)


def test_apply_gradients_advances_the_step():
  state = tiny_setup().state
  grads = jax.tree.map(np.ones_like, jax.device_get(state.params))
  new = state.apply_gradients(grads=grads)
  assert int(new.step) == 1
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), new.params, state.params)
  assert all(jax.tree.leaves(changed))
