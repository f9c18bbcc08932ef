"""Where surgery puts SE blocks: the rules, read off one traced forward pass.

A probe runs the model once under `jax.make_jaxpr` and tags the output of
every module call it may choose (`checkpoint_name`, an identity that stays in
the program as a `name` equation), recording the call's module path, kind
(conv, norm or other) and output shape. The rules then choose among the calls:

  'residual'  the paper's place (section 3.3, Fig. 3): after the last
              convolution or normalisation of each residual branch, before
              the addition.
  'convs'     Composer's rule: after every convolution with at least
              `min_channels` output channels.
  callable    `where(path, shape)`: the user's predicate on a module's path
              ('layer1_0/conv1') and output shape (N, H, W, C).

Only calls with an (N, H, W, C) output can take a block. Which output is the
end of a residual branch is read from the program, not from names: follow the
tagged value through element-wise operations whose other operands are
parameters, constants, random draws or broadcast statistics (activations,
layer scales, stochastic depth; through a normalisation too, which is why the
latest tagged value wins) to an addition of two full-size, data-dependent
values that does not depend on the tagged value on its other side. Of the two
operands, the branch is the one with more convolutions behind it: an identity
shortcut has none of the branch's, a projection shortcut one. An addition of
two paths equally deep is not taken for a residual sum. Programs inside
`scan`, `while` and `cond` are not followed.
"""

import dataclasses
from typing import Callable, Optional, Sequence, Union

from jax.extend import core

from se_flax.errors import check_choice
from se_flax.errors import check_range
from se_flax.errors import ConfigError

RULES = ('residual', 'convs')
KINDS = ('conv', 'norm', 'other')
TAG = 'se_flax_surgery_site_'

Where = Union[str, Callable[[str, tuple], bool]]


@dataclasses.dataclass(frozen=True)
class Call:
  """One module call the probe saw: its path in the model, its kind and its output shape."""
  path: tuple
  kind: str
  shape: tuple


@dataclasses.dataclass(frozen=True)
class Site:
  """A place that gets an SE block: the module whose output it rescales, and that output's shape."""
  path: tuple
  shape: tuple

  @property
  def name(self) -> str:
    return path_name(self.path)

  @property
  def channels(self) -> int:
    return self.shape[-1]


def path_name(path) -> str:
  """'layer1_0/conv1': a module path as the predicate and the gate analysis name it."""
  return '/'.join(str(p) for p in path)


def check(where: Where, min_channels: int) -> None:
  """Refuses a rule that is neither a known name nor a predicate, and a bad `min_channels`."""
  if not callable(where):
    check_choice('model.surgery.where', where, RULES)
  check_min_channels(min_channels)


def check_min_channels(min_channels: int) -> None:
  """A convolution's output width: a positive int32 (checked whether or not surgery is on)."""
  check_range('model.surgery.min_channels', min_channels, integer=True, low=1, high=2 ** 31 - 1)


def check_spec(spec) -> None:
  """Surgery places blocks by its own rule; the spec's placement fields must be left at default."""
  for field, default in (('integration', 'standard'), ('position', 'last'), ('stages', None)):
    value = getattr(spec, field)
    if value != default:
      raise ConfigError(f'config.model.se.{field}={value!r} places the blocks of an se_ preset; '
                        f'surgery places them by config.model.surgery.where: leave {field} at '
                        f'{default!r}')


def tag(index: int) -> str:
  return f'{TAG}{index}'


def probed(where: Where, kind: str) -> bool:
  """Whether the probe must tag calls of this kind: a predicate may choose any module."""
  return callable(where) or kind != 'other'


def choose(calls: Sequence[Call], jaxpr: core.ClosedJaxpr, num_data: int, where: Where,
           min_channels: int) -> list:
  """The sites the rule picks among `calls`, one per module path, in the order of first call.

  Args:
    calls: what the probe recorded; call i's output carries tag(i) in `jaxpr`.
    jaxpr: the probed forward pass.
    num_data: how many of the last inputs of `jaxpr` are the model's inputs
      (the others are its parameters and state).
    where: a name in RULES or a predicate.
    min_channels: the 'convs' rule's bound.
  """
  mapped = [i for i, c in enumerate(calls) if len(c.shape) == 4]
  if callable(where):
    picked = {i for i in mapped if where(path_name(calls[i].path), tuple(calls[i].shape))}
  elif where == 'convs':
    picked = {i for i in mapped if calls[i].kind == 'conv' and calls[i].shape[-1] >= min_channels}
  else:
    candidates = {i for i in mapped if calls[i].kind in ('conv', 'norm')}
    picked = _Program(jaxpr, num_data).branch_ends(candidates)
  sites, seen = [], set()
  for i in sorted(picked):
    if calls[i].path not in seen:
      seen.add(calls[i].path)
      sites.append(Site(tuple(calls[i].path), tuple(calls[i].shape)))
  return sites


# Call-like primitives whose inner program is followed as if written in line.
_INLINE = ('pjit', 'jit', 'closed_call', 'core_call', 'custom_jvp_call', 'custom_vjp_call',
           'custom_vjp_call_jaxpr', 'checkpoint', 'remat', 'named_call')
# Element-wise primitives a branch's value passes through on its way to the sum.
_UNARY = ('convert_element_type', 'name', 'copy', 'copy_p', 'reduce_precision', 'neg')
_BINARY = ('add', 'sub', 'mul', 'div', 'max', 'min', 'select_n')
_ADDS = ('add', 'add_any')


@dataclasses.dataclass
class _Node:
  primitive: str
  params: dict
  inputs: list  # value ids; None for literals and constants
  outputs: list


class _Program:
  """A jaxpr flattened to primitives, with what each value depends on."""

  def __init__(self, closed: core.ClosedJaxpr, num_data: int):
    self.nodes: list[_Node] = []
    self.shape: list[tuple] = []
    self.data: list[bool] = []  # depends on the model's inputs
    self.convs: list[int] = []  # bit set of the convolutions behind the value
    self.tags: list[Optional[int]] = []  # the call index a `name` equation tags, per output
    self.users: list[list[int]] = []
    self._num_convs = 0
    jaxpr = closed.jaxpr
    env = {v: None for v in jaxpr.constvars}
    first_data = len(jaxpr.invars) - num_data
    for k, v in enumerate(jaxpr.invars):
      env[v] = self._value(v.aval.shape, k >= first_data, 0)
    self._flatten(jaxpr, env)

  def _value(self, shape, data, convs) -> int:
    self.shape.append(tuple(shape))
    self.data.append(data)
    self.convs.append(convs)
    self.tags.append(None)
    self.users.append([])
    return len(self.shape) - 1

  def _flatten(self, jaxpr: core.Jaxpr, env: dict) -> None:
    read = lambda v: None if isinstance(v, core.Literal) else env.get(v)
    for eqn in jaxpr.eqns:
      inputs = [read(v) for v in eqn.invars]
      inner = _inner_jaxpr(eqn) if eqn.primitive.name in _INLINE else None
      if inner is not None:
        sub_env = {v: None for v in inner.constvars}
        sub_env.update(zip(inner.invars, inputs))
        self._flatten(inner, sub_env)
        sub_read = lambda v, e=sub_env: None if isinstance(v, core.Literal) else e.get(v)
        env.update((v, sub_read(o)) for v, o in zip(eqn.outvars, inner.outvars))
        continue
      live = [i for i in inputs if i is not None]
      data = any(self.data[i] for i in live)
      convs = 0
      for i in live:
        convs |= self.convs[i]
      if eqn.primitive.name == 'conv_general_dilated':
        convs |= 1 << self._num_convs
        self._num_convs += 1
      node = len(self.nodes)
      outputs = [self._value(getattr(v.aval, 'shape', ()), data, convs) for v in eqn.outvars]
      name = eqn.params.get('name') if eqn.primitive.name == 'name' else None
      if isinstance(name, str) and name.startswith(TAG):
        self.tags[outputs[0]] = int(name[len(TAG):])
      self.nodes.append(_Node(eqn.primitive.name, eqn.params, inputs, outputs))
      for i in set(live):
        self.users[i].append(node)
      env.update(zip(eqn.outvars, outputs))

  def _passive(self, value, than) -> bool:
    """An operand carrying no second full-size signal: a constant, parameter or broadcast."""
    if value is None or not self.data[value]:
      return True
    size = lambda v: _size(self.shape[v])
    return size(value) < size(than)

  def _ancestors_of(self, value) -> set:
    """Every value `value` is computed from (itself included)."""
    seen, stack = set(), [value]
    producer = self._producers()
    while stack:
      v = stack.pop()
      if v in seen:
        continue
      seen.add(v)
      node = producer.get(v)
      if node is not None:
        stack.extend(i for i in self.nodes[node].inputs if i is not None)
    return seen

  def _producers(self) -> dict:
    if not hasattr(self, '_producer'):
      self._producer = {o: n for n, node in enumerate(self.nodes) for o in node.outputs}
    return self._producer

  def branch_ends(self, candidates: set) -> set:
    """The candidate calls whose output is the last tagged value of a residual branch."""
    reaching = {}  # residual sum node -> [(tagged value, call)]
    for value, call in enumerate(self.tags):
      if call is None or call not in candidates:
        continue
      shape = self.shape[value]
      frontier, seen = [value], {value}
      while frontier:
        u = frontier.pop()
        for n in self.users[u]:
          node = self.nodes[n]
          out = node.outputs[0] if node.outputs else None
          if out is None or self.shape[out] != shape:
            continue
          others = [i for i in node.inputs if i != u]
          if node.primitive in _UNARY or (node.primitive in _BINARY
                                          and all(self._passive(i, u) for i in others)):
            if out not in seen:
              seen.add(out)
              frontier.append(out)
          elif node.primitive in _ADDS and len(others) == 1 and self._is_sum(u, others[0], value):
            reaching.setdefault(n, []).append((value, call))
    # A branch's norm follows its conv: the latest tagged value before the sum is its end.
    return {max(pairs)[1] for pairs in reaching.values()}

  def _is_sum(self, branch, other, tagged) -> bool:
    if other is None or not self.data[other] or self.shape[other] != self.shape[branch]:
      return False
    if tagged in self._ancestors_of(other):
      return False
    return bin(self.convs[branch]).count('1') > bin(self.convs[other]).count('1')


def _inner_jaxpr(eqn) -> Optional[core.Jaxpr]:
  for key in ('jaxpr', 'call_jaxpr', 'fun_jaxpr'):
    inner = eqn.params.get(key)
    if isinstance(inner, core.ClosedJaxpr):
      return inner.jaxpr
    if isinstance(inner, core.Jaxpr):
      return inner
  return None


def _size(shape) -> int:
  n = 1
  for d in shape:
    n *= int(d)
  return n
