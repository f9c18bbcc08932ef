"""Shapes of every preset's variables and output, traced once per process and shared.

Tracing `init` of a 50-unit network takes about a second on a small CPU
machine; several test files ask about the same presets, so they share this
cache. Nothing here is compiled. `builder` gives a preset's class with its
arguments, for tests that change the layout itself.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from se_flax.models import registry
from se_flax.models import zoo
from se_flax.models.cifar import CifarResNet


def classes_of(name):
  return 10 if registry.PRESETS[name][0] is CifarResNet else 1000


def builder(name):
  """`functools.partial` of the backbone class of preset `name`, with the preset's arguments."""
  cls, kwargs, _ = registry.PRESETS[name]
  return functools.partial(cls, **kwargs)


@functools.lru_cache(maxsize=None)
def traced(name, se=None, **overrides):
  """(logits, variables) of `init_with_output` on one image, as ShapeDtypeStructs.

  Parameter shapes do not depend on the input size: every backbone ends in global
  pooling. 32x32, except for nets whose stem needs more (Inception-ResNet-v2: 75).
  """
  model = registry.create_model(name, classes_of(name), se=se, **overrides)
  size = 32 if name not in zoo.PRESETS or zoo.INPUT_SIZES[name] < 299 else 75
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init_with_output(jax.random.PRNGKey(0), x), x)


def params_of(name, se=None, **overrides):
  return traced(name, se, **overrides)[1]['params']


def count(name, se=None, **overrides):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params_of(name, se, **overrides)))
