"""SE surgery on NNX models: graph surgery on a copy of the model.

An NNX model is a graph of Python objects that holds its own variables, so
surgery edits the graph (the NNX model surgery guide's way): on a copy made
by `nnx.clone`, each chosen module gets an attribute `se`, an `SEBlockNNX`
made now for its output's channels, and its class becomes a subclass of its
own whose `__call__` returns `self.se(output)`. Every existing variable keeps
its path (`blocks/0/bn2/scale`); the blocks add `blocks/0/bn2/se/...`; a
module referenced from two places is one object and gets one block. The
subclasses are made once per class, so `nnx.split` gives one graph definition
per model, and `nnx.jit` traces it once.

The sites are found by the same probe as for Linen (places.py), on a second
copy whose candidate modules tag their outputs, traced functionally through
`nnx.split` / `nnx.merge`.
"""

import functools
from typing import Any

from flax import nnx
import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

from se_flax.layers.se import SEBlockNNX
from se_flax.layers.se import SESpec
from se_flax.surgery import places

CONVS = (nnx.Conv,)
NORMS = (nnx.BatchNorm, nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm, nnx.InstanceNorm)


def kind(module) -> str:
  if isinstance(module, CONVS):
    return 'conv'
  return 'norm' if isinstance(module, NORMS) else 'other'


def _set_class(module, cls):
  # Past NNX's __setattr__, which would record `__class__` as a static attribute.
  object.__setattr__(module, '__class__', cls)


def _probe_class(cls, record, path):
  """A subclass of `cls` whose calls report their output to `record` under `path`."""

  def __call__(self, *args, **kwargs):
    return record(path, cls, cls.__call__(self, *args, **kwargs))

  return type(cls.__name__, (cls,), {'__call__': __call__, '__module__': cls.__module__})


@functools.cache
def with_se_class(cls):
  """`cls` whose `__call__` rescales its output by the module's `se` block (one class per `cls`)."""

  def __call__(self, *args, **kwargs):
    return self.se(cls.__call__(self, *args, **kwargs))

  return type(f'{cls.__name__}WithSE', (cls,), {
      '__call__': __call__,
      '__module__': cls.__module__,
      '__doc__': f'{cls.__name__} followed by SE.'
  })


def find_sites(model: nnx.Module, where: places.Where, min_channels: int, args, kwargs) -> list:
  """The sites `where` picks in `model` called as `model(*args, **kwargs)`; `model` is unchanged."""
  probe = nnx.clone(model)
  calls = []

  def record(path, cls, y):
    del cls
    if not (isinstance(y, jax.Array) and y.ndim == 4):
      return y
    calls.append(places.Call(path, kind_of[path], tuple(y.shape)))
    return checkpoint_name(y, places.tag(len(calls) - 1))

  kind_of = {}
  for path, module in nnx.iter_modules(probe):
    path = tuple(path)
    module_kind = kind(module)
    if path in kind_of or not places.probed(where, module_kind) or _in_se_block(probe, path):
      continue
    kind_of[path] = module_kind
    _set_class(module, _probe_class(type(module), record, path))

  graphdef, state = nnx.split(probe)

  def forward(state, *data):
    return nnx.merge(graphdef, state)(*data, **kwargs)

  data = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in args]
  closed = jax.make_jaxpr(forward)(state, *data)
  num_data = len(jax.tree.leaves(data))
  sites = places.choose(calls, closed, num_data, where, min_channels)
  for site in sites:
    if hasattr(module_at(model, site.path), 'se'):
      raise ValueError(f'{site.name} already has an attribute `se`; surgery names its block `se` '
                       'there: choose another place for it')
  return sites


def _in_se_block(model, path) -> bool:
  node = model
  for key in path:
    if isinstance(node, SEBlockNNX):
      return True
    node = node[key] if isinstance(key, int) else getattr(node, key)
  return isinstance(node, SEBlockNNX)


def module_at(model, path):
  node = model
  for key in path:
    node = node[key] if isinstance(key, int) else getattr(node, key)
  return node


def add_se(model: nnx.Module, spec: SESpec, where: places.Where, min_channels: int,
           identity_start: bool, dtype: Any, args, kwargs, rngs: nnx.Rngs) -> nnx.Module:
  sites = find_sites(model, where, min_channels, args, kwargs)
  model = nnx.clone(model)
  for site in sites:
    module = module_at(model, site.path)
    _set_class(module, with_se_class(type(module)))
    module.se = SEBlockNNX(site.channels, spec, dtype=dtype, identity_start=identity_start,
                           rngs=rngs)
  return model
