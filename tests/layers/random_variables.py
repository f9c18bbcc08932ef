"""Variables for a module without compiling its random initialisers.

Compiling the random number generation of `init` costs seconds per distinct
shape on a small CPU machine. Shapes come from `jax.eval_shape` instead, and
values from numpy: BatchNorm gets scales away from 1 and running statistics
away from (0, 1), so that a skipped or misplaced normalisation changes the
output. `init_without_kernels` keeps what `init` itself sets (BN scales and
biases, zero biases, GeM's p) and draws only the kernels from numpy.
"""

from flax import traverse_util
import jax
import numpy as np


def random_variables(module, *inputs, seed=0, **kwargs):
  """Variables shaped like `module.init(key, *inputs, **kwargs)`, filled from numpy."""
  shapes = jax.eval_shape(lambda *a: module.init(jax.random.PRNGKey(0), *a, **kwargs), *inputs)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    shape = leaf.shape
    if name == 'kernel':
      # Fan-in scaling keeps activations O(1) through a few units.
      return (rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if name in ('bias', 'mean'):
      return (0.1 * rng.normal(size=shape)).astype(np.float32)
    if name == 'gem_p':
      return np.float32(3.0)
    raise ValueError(f'no filler for variable {name!r}')

  return jax.tree_util.tree_map_with_path(fill, shapes)


def init_without_kernels(module, *inputs, seed=0, **kwargs):
  """`module.init`'s own values for every variable but the kernels, which come from numpy.

  Only kernels need random numbers; jit drops their computation when they are not returned.
  """

  def constants(key, *a):
    flat = traverse_util.flatten_dict(module.init(key, *a, **kwargs))
    return {k: v for k, v in flat.items() if k[-1] != 'kernel'}

  flat = traverse_util.flatten_dict(random_variables(module, *inputs, seed=seed, **kwargs))
  flat.update(jax.jit(constants)(jax.random.PRNGKey(0), *inputs))
  return traverse_util.unflatten_dict(flat)
