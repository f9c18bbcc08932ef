"""SE blocks put into a Flax model that has none, Linen or NNX, without editing its source.

    from se_flax import surgery
    from se_flax.layers.se import SESpec

    se_net = surgery.add_se(net, SESpec(reduction=16), where='residual')        # Linen
    se_net = surgery.add_se(nnx_net, SESpec(), 'convs', min_channels=64,
                            args=(x,), rngs=nnx.Rngs(0))                          # NNX

`where` is 'residual' (the paper's place: after the last conv/norm of each
residual branch, before the addition), 'convs' (Composer's rule: after every
convolution with at least `min_channels` outputs) or a predicate
`where(path, shape) -> bool` on a module's path ('layer1_0/conv1') and output
shape (N, H, W, C); places.py finds the places. Each block is named `se`
under the module whose output it rescales, and every existing variable keeps
its path, so a plain model's weights load into the surgery-made one as they
are (`with_plain_weights`). `identity_start=True` makes each block start as
the identity (layers/excite.py says how, per gate), so a trained network's
function is unchanged at step 0. docs/design.md, "SE surgery", says why the
Flax mechanisms used are sound.
"""

from typing import Any, Optional

from flax import nnx
from flax import traverse_util
import flax.linen as nn
import jax.numpy as jnp

from se_flax.layers.se import check_identity_start
from se_flax.layers.se import SESpec
from se_flax.surgery import on_linen
from se_flax.surgery import on_nnx
from se_flax.surgery import places
from se_flax.surgery.on_linen import WithSE
from se_flax.surgery.places import RULES
from se_flax.surgery.places import Site

__all__ = [
    'RULES', 'Site', 'WithSE', 'add_se', 'find_sites', 'se_parameter_paths', 'with_plain_weights'
]


def add_se(model, spec: SESpec = SESpec(), where: places.Where = 'residual', *,
           min_channels: int = 128, identity_start: bool = False, dtype: Any = jnp.float32,
           args: Optional[tuple] = None, kwargs: Optional[dict] = None,
           rngs: Optional[nnx.Rngs] = None):
  """`model` with SE blocks at the places `where` picks; `model` itself is not changed.

  Args:
    model: a Linen module or an NNX module without SE blocks at those places.
    spec: the blocks' design; its placement fields (integration, position,
      stages) must keep their defaults: `where` places the blocks.
    where: 'residual', 'convs' or a predicate `where(path, shape) -> bool`.
    min_channels: the 'convs' rule's bound (Composer's `min_channels`).
    identity_start: every block starts as the identity.
    dtype: the blocks' compute dtype.
    args, kwargs: a sample call, `model(*args, **kwargs)`, whose arrays may be
      `jax.ShapeDtypeStruct`s; the places are found on it. Needed for NNX,
      whose blocks are made now. For Linen, without it every call finds the
      places from its own inputs.
    rngs: NNX only: the keys of the new blocks' parameters.

  Returns:
    Linen: a `WithSE` module, whose variables are `model`'s plus the blocks'.
    NNX: a copy of `model` whose chosen modules carry a block each.
  """
  places.check(where, min_channels)
  places.check_spec(spec)
  if identity_start:
    check_identity_start(spec)
  kwargs = dict(kwargs or {})
  if isinstance(model, nnx.Module):
    if args is None or rngs is None:
      raise ValueError('add_se on an NNX model needs args (a sample call) and rngs: NNX makes '
                       'the blocks now, for the channels each place has')
    return on_nnx.add_se(model, spec, where, min_channels, identity_start, dtype, tuple(args),
                         kwargs, rngs)
  if isinstance(model, nn.Module):
    return on_linen.add_se(model, spec, where, min_channels, identity_start, dtype,
                           None if args is None else tuple(args), kwargs)
  raise TypeError(f'add_se takes a Flax Linen or NNX module, not {type(model).__name__}')


def find_sites(model, where: places.Where = 'residual', *, min_channels: int = 128, args: tuple,
               kwargs: Optional[dict] = None) -> list:
  """The `Site`s (module path, output shape) where `add_se` would put blocks, in call order."""
  places.check(where, min_channels)
  if isinstance(model, WithSE):
    model = model.base
  lib = on_nnx if isinstance(model, nnx.Module) else on_linen
  return lib.find_sites(model, where, min_channels, tuple(args), dict(kwargs or {}))


def se_parameter_paths(variables) -> list:
  """The paths ('layer1_0/bn3/se/fc1/kernel') of the SE blocks' variables in a variables tree."""
  flat = traverse_util.flatten_dict(_plain_dict(variables), sep='/')
  return sorted(k for k in flat if '/se/' in f'/{k}')


def with_plain_weights(variables, plain):
  """`variables` of a surgery-made Linen model with every variable of `plain` copied in.

  The SE blocks keep their values from `variables`; every other variable must
  be in `plain` with the same shape, and `plain` may hold nothing else.

  Raises:
    ValueError: the trees differ otherwise (the message names the paths).
  """
  ours = traverse_util.flatten_dict(_plain_dict(variables), sep='/')
  theirs = traverse_util.flatten_dict(_plain_dict(plain), sep='/')
  added = set(se_parameter_paths(variables))
  missing = sorted(set(ours) - set(theirs) - added)
  extra = sorted(set(theirs) - set(ours))
  if missing or extra:
    raise ValueError(f'the plain variables do not fit the model: missing {missing[:8]}, '
                     f'unexpected {extra[:8]}')
  for path, value in theirs.items():
    if tuple(value.shape) != tuple(ours[path].shape):
      raise ValueError(f'{path} has shape {tuple(value.shape)}, the model needs '
                       f'{tuple(ours[path].shape)}')
    ours[path] = value
  return traverse_util.unflatten_dict(ours, sep='/')


def _plain_dict(tree):
  if hasattr(tree, 'unfreeze'):
    tree = tree.unfreeze()
  return {k: _plain_dict(v) if hasattr(v, 'items') else v for k, v in dict(tree).items()}
