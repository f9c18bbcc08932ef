"""Model size and cost: parameters, multiply-accumulates, a per-stage table.

MACs are counted exactly from the traced program (no compilation): every
convolution and matrix product contributes output elements x contraction
size, which is what the published GFLOPs of the paper (Table 2) and timm's
counts measure. Pooling, normalisation and activations are not counted, nor
is an SE block's squeeze, a mean, where evaluation computes it through a 1x1
convolution (`unit.SQUEEZE_THROUGH_CONV`).
"""

import dataclasses

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np

from se_flax.models import unit


def _macs_of_jaxpr(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    if unit.SQUEEZE_THROUGH_CONV in str(eqn.source_info.name_stack):
      continue
    prim = eqn.primitive.name
    if prim == 'conv_general_dilated':
      out = eqn.outvars[0].aval
      rhs = eqn.invars[1].aval
      dn = eqn.params['dimension_numbers']
      # rhs_spec = (out feature dim, in feature dim, spatial dims...)
      in_per_group = rhs.shape[dn.rhs_spec[1]]
      kernel = int(np.prod([rhs.shape[d] for d in dn.rhs_spec[2:]]))
      total += int(np.prod(out.shape)) * in_per_group * kernel
    elif prim == 'dot_general':
      out = eqn.outvars[0].aval
      (lhs_contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval
      contraction = int(np.prod([lhs.shape[d] for d in lhs_contract]))
      total += int(np.prod(out.shape)) * contraction
    for sub in jax_core.jaxprs_in_params(eqn.params):
      total += _macs_of_jaxpr(sub)
  return total


def count_macs(fn, *args) -> int:
  """Multiply-accumulates of one call of `fn(*args)` (args may be ShapeDtypeStructs)."""
  closed = jax.make_jaxpr(fn)(*args)
  return _macs_of_jaxpr(closed.jaxpr)


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


@dataclasses.dataclass
class ModelSummary:
  name: str
  input_shape: tuple
  params: int
  macs: int
  stages: list  # (stage name, params, output shape)

  def table(self) -> str:
    lines = [f'model {self.name}, input {self.input_shape}', f'{"stage":<12}{"params":>14}  output']
    for stage, p, shape in self.stages:
      lines.append(f'{stage:<12}{p:>14,}  {shape or "-"}')
    lines.append(f'{"total":<12}{self.params:>14,}')
    lines.append(f'GMACs (multiply-accumulates, one forward pass): {self.macs / 1e9:.3f}')
    return '\n'.join(lines)


# Modules between stages that belong to the stage they lead into: Inception-ResNet-v2's
# reductions open the 17x17 and 8x8 stages, its last 1x1 conv widens the features for the head.
_LEADS_INTO = {'mixed_6a': 'layer2', 'mixed_7a': 'layer3', 'conv2d_7b': 'head'}


def _stage_of(module_name: str) -> str:
  if module_name.startswith('layer'):
    return module_name.split('_')[0]
  if module_name in _LEADS_INTO:
    return _LEADS_INTO[module_name]
  return 'head' if module_name.startswith(('fc', 'bn_final')) else 'stem'


def summarize(model, input_shape, name='') -> ModelSummary:
  """Counts with `jax.eval_shape`; nothing is compiled or allocated."""
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  variables = jax.eval_shape(lambda v: model.init(jax.random.PRNGKey(0), v, train=False), x)
  params = variables['params']

  per_stage: dict[str, int] = {}
  for module_name, sub in params.items():
    stage = _stage_of(module_name)
    per_stage[stage] = per_stage.get(stage, 0) + count_params(sub)

  # The output shape of each stage, read from the last module of that stage.
  _, state = jax.eval_shape(
      lambda v, xx: model.apply(v, xx, train=False, capture_intermediates=True, mutable=
                                ['intermediates']), variables, x)
  inter = state['intermediates']
  shapes = {}
  for module_name in inter:
    if module_name.startswith('layer') and '__call__' in inter[module_name]:
      shapes[_stage_of(module_name)] = tuple(inter[module_name]['__call__'][0].shape[1:])

  order = ['stem'] + sorted(k for k in per_stage if k.startswith('layer')) + ['head']
  stages = [(k, per_stage.get(k, 0), shapes.get(k, '')) for k in order if k in per_stage]
  macs = count_macs(lambda v, xx: model.apply(v, xx, train=False), variables, x)
  return ModelSummary(name, tuple(input_shape), count_params(params), macs, stages)


def macs_of(model, input_shape) -> int:
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  variables = jax.eval_shape(lambda v: model.init(jax.random.PRNGKey(0), v, train=False), x)
  return count_macs(lambda v, xx: model.apply(v, xx, train=False), variables, x)
