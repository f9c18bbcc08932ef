"""Explicit, tensor-by-tensor mappings from a PyTorch state dict to Flax variables.

A mapping is a tuple of `Rule`s. Each rule names some of our modules (a regex
over the module's '/'-joined path, e.g. `layer1_0/conv2`), the PyTorch module
they come from (a `re.Match.expand` template, e.g. `layer1.0.conv2`) and the
module's kind. The kind fixes which tensors the module holds on each side and
how their layouts differ, so the plan below lists every source tensor the
model needs, with its exact PyTorch shape, before any data is read.

Nothing is matched by guessing: a state dict converts only if it holds exactly
the planned tensors with the planned shapes (plus the ignorable buffers named
in `IGNORED`); otherwise `MappingError` lists every missing, unexpected and
mis-shaped tensor at once.
"""

import dataclasses
import re
from typing import Callable, Mapping

from flax import traverse_util
import numpy as np

CONV = 'conv'  # nn.Conv2d without bias
BN = 'bn'  # nn.BatchNorm2d
LINEAR = 'linear'  # nn.Linear
CONV1X1_DENSE = 'conv1x1_dense'  # a 1x1 nn.Conv2d on a pooled (N, C, 1, 1) map: our nn.Dense
CONV_BIAS = 'conv_bias'  # nn.Conv2d with bias
CONV7X7_DENSE = 'conv7x7_dense'  # a 7x7 nn.Conv2d on a 7x7 map: our nn.Dense on the flattened map

_FLAT = 7  # the map side CONV7X7_DENSE covers (VGG's fc1 on its 7x7 pooled features)


@dataclasses.dataclass(frozen=True)
class Rule:
  ours: str  # regex, fully matched against our module path
  source: str  # expansion template giving the PyTorch module name
  kind: str


@dataclasses.dataclass(frozen=True)
class _Leaf:
  collection: str  # 'params' or 'batch_stats'
  name: str  # our leaf name
  source: str  # the PyTorch tensor's name inside its module
  to_flax: Callable  # PyTorch layout -> ours
  source_shape: Callable  # our shape -> PyTorch shape


def _same(x):
  return x


_KINDS = {
    # OIHW -> HWIO; grouped convs are (O, I/groups, kh, kw) -> (kh, kw, I/groups, O), the same transpose.
    CONV: (_Leaf('params', 'kernel', 'weight', lambda w: w.transpose(2, 3, 1, 0), lambda s:
                 (s[3], s[2], s[0], s[1])),),
    # Both PyTorch and our BatchNorm store the running variance unbiased, so it copies as is.
    BN: (_Leaf('params', 'scale', 'weight', _same,
               _same), _Leaf('params', 'bias', 'bias', _same,
                             _same), _Leaf('batch_stats', 'mean', 'running_mean', _same, _same),
         _Leaf('batch_stats', 'var', 'running_var', _same, _same)),
    LINEAR: (_Leaf('params', 'kernel', 'weight', lambda w: w.T, lambda s:
                   (s[1], s[0])), _Leaf('params', 'bias', 'bias', _same, _same)),
    CONV1X1_DENSE: (_Leaf('params', 'kernel', 'weight', lambda w: w[:, :, 0, 0].T, lambda s:
                          (s[1], s[0], 1, 1)), _Leaf('params', 'bias', 'bias', _same, _same)),
    CONV_BIAS: (_Leaf('params', 'kernel', 'weight', lambda w: w.transpose(2, 3, 1, 0), lambda s:
                      (s[3], s[2], s[0], s[1])), _Leaf('params', 'bias', 'bias', _same, _same)),
    # PyTorch convolves (C, 7, 7) with one kernel per output; our Dense reads the map flattened
    # as (H, W, C), so the kernel becomes (7, 7, C, O) before it is flattened the same way.
    CONV7X7_DENSE: (_Leaf('params', 'kernel', 'weight',
                          lambda w: w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0]), lambda s:
                          (s[1], s[0] // _FLAT ** 2, _FLAT, _FLAT)),
                    _Leaf('params', 'bias', 'bias', _same, _same)),
}

# Buffers a PyTorch module carries that have no meaning here. BN's step counter only
# matters for momentum=None (cumulative averaging); it is consumed when present and
# may be absent, as in state dicts saved before PyTorch 0.4.1 introduced it.
IGNORED = {BN: ('num_batches_tracked',)}


@dataclasses.dataclass(frozen=True)
class Entry:
  """One planned tensor: where it comes from and where it goes."""
  source_key: str
  source_shape: tuple
  target: tuple  # (collection, *module_path, leaf)
  to_flax: Callable


@dataclasses.dataclass(frozen=True)
class Plan:
  entries: tuple  # Entry, ordered by our module path
  ignored: tuple  # names of consumable buffers (see IGNORED)
  layout: tuple  # (PyTorch key, shape) of the whole state dict

  def source_shapes(self) -> dict:
    """PyTorch key -> shape for every tensor of the matching state dict (ignorable buffers: ())."""
    return dict(self.layout)


class MappingError(ValueError):
  """A state dict does not match the plan; lists every offending tensor."""

  def __init__(self, what, missing, unexpected, misshaped, hint=''):
    self.missing = missing  # [(key, expected shape)]
    self.unexpected = unexpected  # [(key, shape)]
    self.misshaped = misshaped  # [(key, shape given, shape expected)]
    lines = [
        f'{what}: {len(missing)} missing, {len(unexpected)} unexpected, '
        f'{len(misshaped)} mis-shaped tensors'
    ]
    lines += [f'  missing     {k}  expected shape {_fmt(s)}' for k, s in missing]
    lines += [f'  unexpected  {k}  shape {_fmt(s)}' for k, s in unexpected]
    lines += [f'  mis-shaped  {k}  shape {_fmt(g)}, expected {_fmt(e)}' for k, g, e in misshaped]
    if hint:
      lines.append(hint)
    super().__init__('\n'.join(lines))


def _fmt(shape):
  return str(tuple(int(d) for d in shape))


def _modules(variables):
  """Our module paths, in the order of `variables`, each with {(collection, leaf): shape}."""
  modules = {}
  for collection in ('params', 'batch_stats'):
    flat = traverse_util.flatten_dict(dict(variables.get(collection, {})))
    for path, value in flat.items():
      modules.setdefault(path[:-1], {})[(collection, path[-1])] = tuple(value.shape)
  others = sorted(set(variables) - {'params', 'batch_stats'})
  if others:
    raise ValueError(f'variable collections {others} have no PyTorch counterpart')
  return modules


def make_plan(abstract_variables, rules) -> Plan:
  """Plans the conversion of every leaf of `abstract_variables` (shapes suffice) under `rules`."""
  entries, ignored, layout, problems = [], [], [], []
  for path, leaves in _modules(abstract_variables).items():
    joined = '/'.join(path)
    matches = [(r, m) for r in rules for m in [re.fullmatch(r.ours, joined)] if m]
    if len(matches) != 1:
      problems.append(f'{joined}: matched by {len(matches)} rules, expected exactly 1')
      continue
    rule, match = matches[0]
    module = match.expand(rule.source)
    known = {(leaf.collection, leaf.name) for leaf in _KINDS[rule.kind]}
    stray = sorted(set(leaves) - known)
    if stray:
      problems.append(f'{joined}: leaves {stray} are not part of a {rule.kind!r} module')
    for leaf in _KINDS[rule.kind]:
      shape = leaves.get((leaf.collection, leaf.name))
      if shape is None:  # e.g. an excitation built without biases
        continue
      entry = Entry(f'{module}.{leaf.source}', tuple(leaf.source_shape(shape)),
                    (leaf.collection,) + path + (leaf.name,), leaf.to_flax)
      entries.append(entry)
      layout.append((entry.source_key, entry.source_shape))
    for name in IGNORED.get(rule.kind, ()):
      ignored.append(f'{module}.{name}')
      layout.append((ignored[-1], ()))
  if problems:
    raise ValueError('the name mapping does not cover the model:\n  ' + '\n  '.join(problems))
  return Plan(tuple(entries), tuple(ignored), tuple(layout))


def check(state_dict: Mapping[str, np.ndarray], plan: Plan, what: str, hint: str = ''):
  """Raises MappingError listing all missing, unexpected and mis-shaped tensors."""
  planned = {e.source_key: e.source_shape for e in plan.entries}
  ignorable = set(plan.ignored)
  missing = [(k, s) for k, s in planned.items() if k not in state_dict]
  unexpected, misshaped = [], []
  for key, value in state_dict.items():
    shape = tuple(np.shape(value))
    if key in planned:
      if shape != planned[key]:
        misshaped.append((key, shape, planned[key]))
    elif key in ignorable:
      if int(np.prod(shape)) != 1:
        misshaped.append((key, shape, ()))
    else:
      unexpected.append((key, shape))
  if missing or unexpected or misshaped:
    raise MappingError(what, missing, unexpected, misshaped, hint)


def apply(state_dict: Mapping[str, np.ndarray], plan: Plan, what: str, hint: str = '') -> dict:
  """Checks `state_dict` against `plan` and returns our variables as float32 numpy arrays."""
  check(state_dict, plan, what, hint)
  flat = {}
  for entry in plan.entries:
    value = np.asarray(state_dict[entry.source_key], dtype=np.float32)
    flat[entry.target] = np.ascontiguousarray(entry.to_flax(value))
  return traverse_util.unflatten_dict(flat)
