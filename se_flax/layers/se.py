"""The Squeeze-and-Excitation block and the one spec that describes it.

SEBlock computes scale(U, gate(excite(squeeze(U)))) (paper section 3, Eq. 4).
Every ablation axis of the paper is a field of `SESpec`; the backbones read
`integration`, `position` and `stages` to decide where the block goes, and
`SEBlock` reads the rest. config.model.se has exactly these fields and
defaults (configs/default.py builds it from the dataclass), and the checks
below are the only rules for their values: `__post_init__` for the spec on
its own, `check_placement` for the spec in a given backbone.

The block exists for both Flax APIs: `SEBlock` (Linen) and `SEBlockNNX` (NNX)
take the same spec and compute the same function through the same squeeze,
excitation and gate registries (`excitation_gates`); their parameters have the
same names and shapes, so weights move between them as they are.
"""

import dataclasses
from typing import Any, Optional, Sequence

from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp

from se_flax.errors import check_choice
from se_flax.errors import ConfigError
from se_flax.layers import excite as excite_lib
from se_flax.layers import squeeze as squeeze_lib
from se_flax.layers.norm import Normalised

ROUNDINGS = ('floor', 'multiple8')
INTEGRATIONS = ('standard', 'pre', 'post', 'identity')  # Table 14, Fig. 5
POSITIONS = ('last', '3x3')  # Table 15
GATHER_EXTENTS = squeeze_lib.GATHER_EXTENTS


@dataclasses.dataclass(frozen=True)
class SESpec:
  """One SE block design. Defaults are the paper's SE-ResNet (r=16, avg, fc, sigmoid, standard)."""
  reduction: int = 16  # r, Table 10
  rounding: str = 'floor'  # 'floor': C // r (paper, Caffe models); 'multiple8': timm's width
  min_width: int = 1  # lower bound on the reduced width
  squeeze: str = 'avg'  # Table 11, Table 16
  gather_extent: int = 0  # squeeze='gather' only: 2, 4, 8, or 0 for global
  excite: str = 'fc'
  gate: str = 'sigmoid'  # Table 12
  integration: str = 'standard'  # Table 14
  position: str = 'last'  # Table 15
  stages: Optional[tuple] = None  # Table 13: stage indices with SE blocks; None = all
  bias: bool = True  # biases in the excitation (the paper's ablations drop them)

  def __post_init__(self):
    if isinstance(self.stages, list):
      object.__setattr__(self, 'stages', tuple(self.stages))
    if not isinstance(self.reduction, int) or isinstance(self.reduction,
                                                         bool) or self.reduction <= 0:
      raise ValueError(f'config.model.se.reduction={self.reduction!r} must be a positive integer '
                       '(the paper sweeps 2, 4, 8, 16, 32)')
    if not isinstance(self.min_width, int) or self.min_width < 1:
      raise ValueError(f'config.model.se.min_width={self.min_width!r} must be an integer >= 1')
    check_choice('model.se.rounding', self.rounding, ROUNDINGS)
    check_choice('model.se.squeeze', self.squeeze, squeeze_lib.SQUEEZES)
    check_choice('model.se.excite', self.excite, excite_lib.EXCITATIONS)
    check_choice('model.se.gate', self.gate, excite_lib.GATES)
    check_choice('model.se.integration', self.integration, INTEGRATIONS)
    check_choice('model.se.position', self.position, POSITIONS)
    check_choice('model.se.gather_extent', self.gather_extent, GATHER_EXTENTS)
    if self.gather_extent and self.squeeze != 'gather':
      raise ValueError(f'config.model.se.gather_extent={self.gather_extent} only applies to '
                       f"squeeze='gather', not squeeze={self.squeeze!r}; set it to 0")
    if self.position != 'last' and self.integration != 'standard':
      raise ValueError(f'config.model.se.position={self.position!r} needs integration=\'standard\' '
                       f'(Table 15 moves the standard block), got integration={self.integration!r}')
    width = squeeze_lib.SQUEEZES[self.squeeze].width_factor
    if self.excite in ('eca', 'identity') and width != 1:
      raise ValueError(
          f'config.model.se.excite={self.excite!r} maps each channel to itself and cannot '
          f'take squeeze={self.squeeze!r}, which emits {width} descriptors per channel')
    if self.stages is not None:
      if not all(isinstance(s, int) and s >= 0 for s in self.stages):
        raise ValueError(f'config.model.se.stages={self.stages!r} must be a tuple of stage indices '
                         '(0-based) or None for all stages')

  def reduced_width(self, channels: int) -> int:
    """Width of the excitation's bottleneck for a block of `channels` channels."""
    if self.reduction > channels:
      raise ValueError(
          f'config.model.se.reduction={self.reduction} exceeds the {channels} channels of '
          f'an SE block; allowed: 1..{channels}')
    if self.rounding == 'floor':
      width = channels // self.reduction
    else:
      # timm's make_divisible(C / r, 8): nearest multiple of 8, at least 8.
      width = max(8, int(channels / self.reduction + 4) // 8 * 8)
    if self.min_width > channels:
      raise ValueError(
          f'config.model.se.min_width={self.min_width} exceeds the {channels} channels '
          f'of an SE block; allowed: 1..{channels}')
    return max(self.min_width, width)

  def check_placement(self, net: str, num_stages: Optional[int] = None,
                      integrations: Sequence[str] = INTEGRATIONS,
                      positions: Sequence[str] = POSITIONS) -> None:
    """Refuses a placement that network `net` has no place for (paper Fig. 5, Tables 13-15).

    Args:
      net: the network, as the message names it.
      num_stages: the network's stages; None where the network is not built
        yet, and its stage indices cannot be checked.
      integrations: the integrations the network admits (all by default).
      positions: the positions the network admits (all by default).

    Raises:
      ConfigError: the message names the field, the value and what is allowed.
    """
    if self.stages == ():
      raise ConfigError(f'config.model.se.stages=() puts no SE block into {net}; name stages for '
                        'SE blocks, e.g. (0, 1), or None for all')
    if num_stages is not None and any(s >= num_stages for s in self.stages or ()):
      raise ConfigError(f'config.model.se.stages={self.stages!r} names a stage this backbone '
                        f'lacks; allowed indices: 0..{num_stages - 1}')
    for field, value, allowed in (('integration', self.integration, integrations),
                                  ('position', self.position, positions)):
      if value not in allowed:
        raise ConfigError(f'config.model.se.{field}={value!r} does not apply to {net}; '
                          f'choose one of {list(allowed)}')

  def in_stage(self, stage: int) -> bool:
    return self.stages is None or stage in self.stages

  @classmethod
  def from_config(cls, cfg) -> 'SESpec':
    """Builds a spec from a mapping (e.g. `config.model.se`); unknown keys are an error."""
    data = dict(cfg)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
      raise ValueError(f'config.model.se has unknown fields {unknown}; known: {sorted(names)}')
    return cls(**data)


def check_identity_start(spec: SESpec) -> None:
  """Refuses identity start where the logits cannot start at zero or the gate has no identity form.

  Raises:
    ConfigError: the message names the field and the values that work.
  """
  if spec.excite not in excite_lib.ZERO_START:
    raise ConfigError(f'identity start needs an excitation with a last layer to start at zero; '
                      f'config.model.se.excite={spec.excite!r} has none: choose one of '
                      f'{sorted(excite_lib.ZERO_START)}')
  if spec.gate not in excite_lib.IDENTITY_GATES:
    raise ConfigError(f'config.model.se.gate={spec.gate!r} has no identity form for identity '
                      f'start; choose one of {sorted(excite_lib.IDENTITY_GATES)}')


def excitation_gates(module, x, squeezed=None):
  """s = gate(excite(squeeze(x))), shape (N, h, w, C), for the SE block `module` of either API.

  `module` has `spec`, `dtype` and `identity_start`, and holds the operators'
  parameters. `squeezed`: squeeze(x) where the layer before has it already
  (the average squeeze, from BatchNorm's statistics: layers/norm.py).
  """
  spec = module.spec
  channels = x.shape[-1]
  reduced = spec.reduced_width(channels) if spec.excite in excite_lib.REDUCING else None
  # The scopes name the block's operations in the compiled program's op names, by which the
  # compiler's cost estimates are split (train/aot.py); they change no computation.
  with jax.named_scope('squeeze'):
    if squeezed is not None and spec.squeeze != 'avg':
      raise ValueError(f'a precomputed squeeze is the average; this block squeezes by '
                       f'{spec.squeeze!r}')
    z = squeeze_lib.SQUEEZES[spec.squeeze].fn(x, spec, module) if squeezed is None else squeezed
  with jax.named_scope('excitation'):
    logits = excite_lib.EXCITATIONS[spec.excite](z.astype(module.dtype), channels, reduced, spec,
                                                 module)
    gates = excite_lib.IDENTITY_GATES if module.identity_start else excite_lib.GATES
    return gates[spec.gate](logits.astype(jnp.float32))


def scale(x, s):
  """x * s, the gates s brought to x's resolution and dtype."""
  with jax.named_scope('scale'):
    return x * upsample_nearest(s, x.shape).astype(x.dtype)


class SEBlock(nn.Module):
  """scale(U, s) with s = gate(excite(squeeze(U))); sows s as intermediates['gate'].

  Attributes:
    spec: the block's design.
    dtype: compute dtype of the excitation.
    identity_start: the excitation's last layer starts at zero and the gate
      takes its identity form, so the block starts as the identity
      (layers/excite.py; `check_identity_start` says which specs can).
  """
  spec: SESpec
  dtype: Any = jnp.float32
  identity_start: bool = False

  @nn.compact
  def __call__(self, x):
    """`x` rescaled. `x` may be a BatchNorm's `Normalised` output (layers/norm.py): the block
    then takes its average squeeze and its product with the gates from there."""
    if self.identity_start:
      check_identity_start(self.spec)
    normalised = x if isinstance(x, Normalised) else None
    if normalised is not None:
      s = excitation_gates(self, normalised.value, normalised.spatial_mean)
    else:
      s = excitation_gates(self, x)
    # Stored only when the caller makes 'intermediates' mutable (the excitation analysis does).
    self.sow('intermediates', 'gate', s)
    if normalised is None:
      return scale(x, s)
    with jax.named_scope('scale'):
      return normalised.scaled(s)


class SEBlockNNX(nnx.Module):
  """`SEBlock` as an NNX module: the same spec, function and parameter names.

  NNX builds parameters when the module is made, so the block runs its
  operators once on a small zero map in `__init__`; each operator's layers and
  parameters are made on that first use (`layer`, `param`) and looked up on
  every later call. Under `nnx.capture(..., nnx.Intermediate)` the gate is
  sown as `gate`; otherwise nothing is stored, as with the Linen block.

  Args:
    channels: C of the maps the block will rescale.
    spec: the block's design.
    dtype: compute dtype of the excitation.
    identity_start: as `SEBlock.identity_start`.
    rngs: the keys of the parameters' initialisers.
  """

  def __init__(self, channels: int, spec: SESpec = SESpec(), *, dtype: Any = jnp.float32,
               identity_start: bool = False, rngs: nnx.Rngs):
    if identity_start:
      check_identity_start(spec)
    self.spec = spec
    self.dtype = dtype
    self.identity_start = identity_start
    self.channels = channels
    side = max(1, spec.gather_extent)
    excitation_gates(_Builder(self, rngs), jnp.zeros((1, side, side, channels), dtype))

  def layer(self, name, build):
    del build  # made in __init__
    return getattr(self, name)

  def param(self, name, init_fn):
    del init_fn
    return getattr(self, name)[...]

  def __call__(self, x):
    s = excitation_gates(self, x)
    # sow outside nnx.capture would keep every call's gate in the module's state.
    if hasattr(self, '__captures__'):
      self.sow(nnx.Intermediate, 'gate', s)
    return scale(x, s)


class _Builder:
  """Stands for an SEBlockNNX while its operators run for the first time, and makes their state."""

  def __init__(self, block, rngs):
    self.block = block
    self.rngs = rngs
    self.spec = block.spec
    self.dtype = block.dtype
    self.identity_start = block.identity_start

  def layer(self, name, build):
    setattr(self.block, name, build(self.rngs))
    return getattr(self.block, name)

  def param(self, name, init_fn):
    value = init_fn(self.rngs.params())
    setattr(self.block, name, nnx.Param(value))
    return value


def upsample_nearest(s, shape):
  """Broadcasts an (N, h, w, C) gate to (N, H, W, C): each cell covers the patch it pooled.

  Cells are ceil(H/h) x ceil(W/w) patches; the last row and column of cells
  are cropped where the extent does not divide the map (see squeeze.gather).
  """
  h, w = s.shape[1:3]
  height, width = shape[1:3]
  if (h, w) in ((1, 1), (height, width)):
    return s
  s = jnp.repeat(jnp.repeat(s, -(-height // h), axis=1), -(-width // w), axis=2)
  return s[:, :height, :width]
