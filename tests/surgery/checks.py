"""What every surgery test asks of a surgery-made model, whatever wrote the model."""

import jax
import jax.numpy as jnp
import numpy as np

from se_flax.train.checkpoint import TrainCheckpointer


def images(n=4, size=8, channels=3, seed=0):
  return jnp.asarray(
      np.random.default_rng(seed).normal(size=(n, size, size, channels)), jnp.float32)


def labels(n=4):
  return jnp.arange(n) % 10


def se_block_params(spec, channels) -> int:
  """A hand count of one SE block's parameters (spec.excite='fc'): C*d + d + d*C + C."""
  d = spec.reduced_width(channels)
  return channels * d + d + d * channels + channels if spec.bias else 2 * channels * d


def count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def round_trip(tmp_path, tree):
  """`tree` written by se_flax's training checkpointer and read back onto its own shapes."""
  tree = jax.tree.map(jnp.asarray, tree)
  checkpointer = TrainCheckpointer(tmp_path, async_save=False, keep_best=False)
  try:
    checkpointer.save(1, tree)
    checkpointer.wait_until_finished()
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          tree)
    restored = checkpointer.restore(1, target=target)
  finally:
    checkpointer.close()
  jax.tree.map(np.testing.assert_array_equal, restored, tree)
  return restored
