"""SE surgery on Linen models: a wrapper that shares the model's scope and intercepts its calls.

`WithSE(base, se, sites=...)` is a Linen module whose variables are the
base model's, with an `se` subtree added under each module it rescales:

  * `nn.share_scope` in `setup` gives the base model the wrapper's own scope,
    so every existing variable keeps its path (`layer1_0/bn3/scale`), and a
    plain model's weights load as they are;
  * `nn.intercept_methods` wraps each module's `__call__` while the wrapper
    runs the base model; the call of a chosen module returns
    `SEBlock(...)(output)`, and that block is bound to a child scope `se` of
    the module's own scope (`layer1_0/bn3/se/fc1/kernel`). A module called
    twice shares its block, as it shares its own weights.

Everything stays a pure function of the variables: `init` creates the blocks'
parameters, `apply` reads them, `jit` traces the interception once, and the
blocks sow their gates into `intermediates` like every SE block.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

from se_flax.layers import norm
from se_flax.layers.se import SEBlock
from se_flax.layers.se import SESpec
from se_flax.surgery import places

CONVS = (nn.Conv, nn.ConvLocal)
NORMS = (nn.BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.InstanceNorm, norm.BatchNorm)
# The probe's keys: parameters, and dropout for a model traced in training mode.
_PROBE_RNGS = ('params', 'dropout')


def kind(module) -> str:
  if isinstance(module, CONVS):
    return 'conv'
  return 'norm' if isinstance(module, NORMS) else 'other'


def _in_se_block(module) -> bool:
  while isinstance(module, nn.Module):
    if isinstance(module, SEBlock):
      return True
    module = module.parent
  return False


def scope_path(scope) -> tuple:
  """The names from the root to `scope`, read through its parents.

  Not `Module.path`: that is fixed when a scope is made, and `nn.share_scope`
  moves scopes made before it (a model's submodule fields) under a new parent.
  """
  names = []
  while scope is not None and scope.parent is not None:
    names.append(scope.name)
    scope = scope.parent
  return tuple(reversed(names))


def _maps(y) -> bool:
  return isinstance(y, jax.Array) and y.ndim == 4


def find_sites(model: nn.Module, where: places.Where, min_channels: int, args, kwargs) -> list:
  """The sites `where` picks in `model` called as `model(*args, **kwargs)`; nothing is computed.

  `args` are arrays or `jax.ShapeDtypeStruct`s; `kwargs` are passed as they are.
  """
  calls = []

  def probe(next_fun, a, k, context):
    y = next_fun(*a, **k)
    module = context.module
    if context.method_name != '__call__' or not _maps(y) or _in_se_block(module):
      return y
    module_kind = kind(module)
    if not places.probed(where, module_kind):
      return y
    calls.append(places.Call(scope_path(module.scope), module_kind, tuple(y.shape)))
    return checkpoint_name(y, places.tag(len(calls) - 1))

  def forward(*data):
    rngs = {name: jax.random.PRNGKey(0) for name in _PROBE_RNGS}
    with nn.intercept_methods(probe):
      return model.init_with_output(rngs, *data, **kwargs)

  data = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in args]
  closed, (_, variables) = jax.make_jaxpr(forward, return_shape=True)(*data)
  sites = places.choose(calls, closed, len(closed.jaxpr.invars), where, min_channels)
  _check_free(sites, variables)
  return sites


def _check_free(sites, variables):
  """A module that already has a child or variable `se` cannot take another under that name."""
  for site in sites:
    for collection in variables.values():
      node = collection
      for key in site.path:
        node = node.get(key, {}) if hasattr(node, 'get') else {}
      if hasattr(node, 'get') and 'se' in node:
        raise ValueError(f'{site.name} already holds an `se` entry; surgery names its block `se` '
                         'there: choose another place for it')


class WithSE(nn.Module):
  """The base model with SE blocks after the modules at `sites`; its variables and theirs.

  Attributes:
    base: the Linen model, unchanged.
    se: the blocks' spec.
    where: the rule or predicate (places.py) that finds the sites when
      `sites` is None.
    min_channels: the 'convs' rule's bound.
    identity_start: the blocks start as the identity (layers/excite.py).
    dtype: the blocks' compute dtype.
    sites: the module paths that get a block; None: found on every call from
      that call's inputs (then every call must find the same, which the rules
      do for inputs of one rank and channel count).
  """
  base: nn.Module
  se: SESpec = SESpec()
  where: Any = 'residual'
  min_channels: int = 128
  identity_start: bool = False
  dtype: Any = jnp.float32
  sites: Optional[tuple] = None

  def setup(self):
    nn.share_scope(self, self.base)

  def __call__(self, *args, **kwargs):
    paths = self.sites
    if paths is None:
      found = find_sites(self.base.clone(parent=None), self.where, self.min_channels, args, kwargs)
      paths = tuple(site.path for site in found)
    paths = frozenset(tuple(p) for p in paths)
    root = scope_path(self.scope)

    def insert(next_fun, a, k, context):
      y = next_fun(*a, **k)
      module = context.module
      if context.method_name != '__call__' or module.scope is None:
        return y
      path = scope_path(module.scope)
      if path[:len(root)] != root or path[len(root):] not in paths or _in_se_block(module):
        return y
      block = SEBlock(self.se, dtype=self.dtype, identity_start=self.identity_start,
                      parent=module.scope.push('se', reuse=True))
      return block(y)

    with nn.intercept_methods(insert):
      return self.base(*args, **kwargs)


def add_se(model: nn.Module, spec: SESpec, where: places.Where, min_channels: int,
           identity_start: bool, dtype: Any, args=None, kwargs=None) -> WithSE:
  sites = None
  if args is not None:
    found = find_sites(model, where, min_channels, args, kwargs or {})
    sites = tuple(site.path for site in found)
  return WithSE(model, spec, where, min_channels, identity_start, dtype, sites)
