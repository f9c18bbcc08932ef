"""The train and eval steps compiled ahead of time for a TPU slice, on a host without one.

libtpu holds the TPU compiler and, given a topology name, describes that
slice's devices without any being attached (`jax.experimental.topologies`).
The steps are the ones training runs (`step.make_train_step`,
`step.make_eval_step`), built from the config as `setup.setup` builds them,
except that the data set's facts come from the registry
(se_flax/data/datasets.py) instead of the files: nothing is read or prepared.
They are lowered with `jax.ShapeDtypeStruct`s sharded over a mesh of the
slice's devices and compiled; what XLA reports on the compiled program is:

- memory per device (`memory_analysis`): arguments, temporaries and outputs,
  against the chip's HBM;
- FLOPs per device (`cost_analysis`) and the compiler's modelled step time
  (`optimal_seconds`), from which images/s and MFU follow;
- the collectives of the optimized HLO (kind, count, bytes).

The modelled time is the compiler's estimate of one step on the devices alone:
no input pipeline, no host, no measured kernel. This libtpu models a negative
time for ResNet-50's steps on v4, v5e and v6e, so a time is reported for v5p
only (`time_model_valid`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from typing import Any, Optional

import jax
from jax.experimental import mesh_utils
import jax.numpy as jnp
from jax.sharding import Mesh
import ml_collections
import numpy as np

from se_flax import models
from se_flax.data import datasets
from se_flax.errors import ConfigError
from se_flax.train import optim
from se_flax.train import parallel
from se_flax.train import setup as setup_lib
from se_flax.train import step as step_lib


@dataclasses.dataclass(frozen=True)
class Generation:
  """One TPU generation: how slice names count and what one chip holds and computes."""
  name: str  # the topology prefix libtpu knows
  counts_cores: bool  # slice names count TensorCores (2 a chip), not chips
  hbm_bytes: int  # HBM per chip
  peak_bf16_flops: float  # dense bf16 FLOP/s per chip
  dims: int  # 3: a torus of x*y*z chips; 2: a grid of x*y chips
  time_model_valid: bool  # whether this libtpu's `optimal_seconds` is usable


GIB = 1 << 30
# The published per-chip figures (cloud.google.com/tpu/docs: system architecture pages).
GENERATIONS = {
    'v4': Generation('v4', True, 32 * GIB, 275e12, 3, False),
    'v5p': Generation('v5p', True, 95 * GIB, 459e12, 3, True),
    'v5e': Generation('v5e', False, 16 * GIB, 197e12, 2, False),
    'v6e': Generation('v6e', False, 32 * GIB, 918e12, 2, False),
}
# Chips -> topology, as Cloud TPU lays slices out: the 3D tori of v4 and v5p, the 2D grids of
# v5e and v6e (at most 256 chips a slice).
_TORI = {
    4: '2x2x1',
    8: '2x2x2',
    16: '2x2x4',
    32: '2x4x4',
    64: '4x4x4',
    128: '4x4x8',
    256: '4x8x8',
    512: '8x8x8',
    1024: '8x8x16',
    2048: '8x16x16',
    4096: '16x16x16'
}
_GRIDS = {4: '2x2', 8: '2x4', 16: '4x4', 32: '4x8', 64: '8x8', 128: '8x16', 256: '16x16'}


def known_slices() -> list[str]:
  """Every slice name `topology` accepts, e.g. v4-8 (4 chips) and v5e-8 (8 chips)."""
  names = []
  for gen in GENERATIONS.values():
    table = _TORI if gen.dims == 3 else _GRIDS
    names += [f'{gen.name}-{chips * (2 if gen.counts_cores else 1)}' for chips in table]
  return names


@dataclasses.dataclass(frozen=True)
class Slice:
  """A named slice: its generation, chips and libtpu topology name."""
  name: str
  generation: Generation
  chips: int
  topology: str  # e.g. 'v5p:2x2x1'


def topology(name: str) -> Slice:
  """The slice a user's name means; ConfigError listing the known names otherwise.

  v4 and v5p names count TensorCores (v5p-8: 4 chips), v5e and v6e names
  count chips (v5e-8: 8 chips).
  """
  match = re.fullmatch(r'(v4|v5p|v5e|v6e)-(\d+)', name or '')
  if match:
    gen = GENERATIONS[match.group(1)]
    count = int(match.group(2))
    chips = count
    if gen.counts_cores:
      chips = count // 2 if count % 2 == 0 else None
    table = _TORI if gen.dims == 3 else _GRIDS
    if chips in table:
      return Slice(name, gen, chips, f'{gen.name}:{table[chips]}')
  raise ConfigError(f'--topology={name!r} is not a known TPU slice; known: '
                    f'{", ".join(known_slices())}')


def slice_devices(tpu_slice: Slice) -> list:
  """Compile-only devices of `tpu_slice` (libtpu describes them; none need be attached)."""
  # Off a Cloud TPU VM there is no metadata server to ask what is attached.
  os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')
  # libtpu's lock guards attached chips; compiling touches none, so processes may share it.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  # What the metadata server would say on a TPU VM; without them libtpu logs a warning each.
  accelerator = tpu_slice.name.replace('v5e-', 'v5litepod-')
  for name, value in (('TPU_ACCELERATOR_TYPE', accelerator), ('TPU_WORKER_ID', '0'),
                      ('TPU_WORKER_HOSTNAMES', 'localhost')):
    os.environ.setdefault(name, value)
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    desc = topologies.get_topology_desc(topology_name=tpu_slice.topology, platform='tpu')
  except (RuntimeError, ValueError) as e:
    raise ConfigError(f'--topology={tpu_slice.name}: the TPU compiler is not available '
                      f'({str(e).splitlines()[0][:200]}); install it with '
                      '`pip install -r requirements-tpu.txt`') from e
  return list(desc.devices)


def slice_mesh(devices) -> Mesh:
  """The training mesh, `('data', 'model')` of shape (n, 1), in the slice's ICI order."""
  try:
    grid = mesh_utils.create_device_mesh((len(devices), 1), devices=devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices, dtype=object).reshape(-1, 1)
  return Mesh(grid, (parallel.DATA_AXIS, parallel.MODEL_AXIS))


def build_run(config: ml_collections.ConfigDict, mesh: Mesh) -> setup_lib.Run:
  """`setup.setup`'s Run on `mesh`, with the data set's facts from the registry."""
  spec = datasets.get(config.dataset.name)
  info = datasets.DatasetInfo(spec.name, spec.num_classes, spec.num_train, spec.num_eval,
                              spec.input_shape(config.dataset.image_size))
  steps_per_epoch = datasets.steps_per_epoch(info, config.batch_size)
  steps = setup_lib.total_steps(config, steps_per_epoch)
  tx, schedule = optim.create_optimizer(config, steps_per_epoch, steps)
  return setup_lib.Run(config=config, workdir='', info=info, mesh=mesh,
                       model=models.from_config(config,
                                                info.num_classes), steps_per_epoch=steps_per_epoch,
                       total_steps=steps, eval_every=steps_per_epoch, tx=tx, schedule=schedule,
                       input_shape=(1,) + tuple(info.image_shape))


def _batch(shapes: dict, mesh: Mesh) -> dict:
  sharding = parallel.batch_sharding(mesh)
  return {
      k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
      for k, (shape, dtype) in shapes.items()
  }


def _train_batch(run: setup_lib.Run) -> dict:
  h, w, c = run.info.image_shape
  n = run.config.batch_size
  return _batch({'image': ((n, h, w, c), jnp.uint8), 'label': ((n,), jnp.int32)}, run.mesh)


def lower_steps(run: setup_lib.Run) -> tuple[Any, Any]:
  """The train and eval steps lowered for `run.mesh` on abstract state and batches.

  The batches are what the input pipeline delivers: uint8 train pixels
  (normalised inside the step), float32 normalised eval images with a mask.
  """
  config = run.config
  state = run.abstract_state()
  train = step_lib.make_train_step(run.model, config, run.mesh, run.schedule, run.info.num_classes)
  train_batch = _train_batch(run)
  spec = datasets.get(config.dataset.name)
  eval_shape = spec.input_shape(datasets.eval_image_size(config.dataset))
  n = config.eval_batch_size
  eval_batch = _batch(
      {
          'image': ((n,) + eval_shape, jnp.float32),
          'label': ((n,), jnp.int32),
          'mask': ((n,), jnp.float32)
      }, run.mesh)
  evaluate = step_lib.make_eval_step(run.model, run.mesh, run.info.num_classes)
  return train.lower(state, train_batch), evaluate.lower(state, eval_batch)


# ---------------------------------------------------------------------------------------------
# What the compiled program says.

_COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
_DTYPE_BYTES = {
    'pred': 1,
    's8': 1,
    'u8': 1,
    's16': 2,
    'u16': 2,
    'f16': 2,
    'bf16': 2,
    's32': 4,
    'u32': 4,
    'f32': 4,
    's64': 8,
    'u64': 8,
    'f64': 8
}
# `%name = <result shape> <op>(` in optimized HLO; async collectives are `<op>-start`.
_OP_LINE = re.compile(r'^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.+?)\s+(' + '|'.join(_COLLECTIVES) +
                      r')(-start)?\(')
_ARRAY = re.compile(r'\b(' + '|'.join(_DTYPE_BYTES) + r')\[([\d,]*)\]')


def _array_bytes(shape_text: str) -> list[int]:
  sizes = []
  for dtype, dims in _ARRAY.findall(shape_text):
    count = math.prod(int(d) for d in dims.split(',') if d) if dims else 1
    sizes.append(count * _DTYPE_BYTES[dtype])
  return sizes


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
  """{kind: {'count', 'bytes'}} of the collectives in optimized HLO, per device.

  `bytes` is the size of each collective's result (an all-gather's gathered
  array, an all-reduce's reduced one). An async `-start` op's result tuple
  also holds its operands, so only its outputs count: the second half for an
  all-gather (operands, then outputs), the whole for an all-reduce, whose
  result is its output.
  """
  found: dict[str, dict[str, int]] = {}
  for line in hlo_text.splitlines():
    match = _OP_LINE.match(line)
    if not match:
      continue
    shape_text, kind, start = match.groups()
    sizes = _array_bytes(shape_text)
    if start and kind != 'all-reduce' and len(sizes) >= 2:
      sizes = sizes[len(sizes) // 2:]
    entry = found.setdefault(kind, {'count': 0, 'bytes': 0})
    entry['count'] += 1
    entry['bytes'] += sum(sizes)
  return found


# Each instruction of the optimized program carries the compiler's estimate of its cycles and
# the op name of the jaxpr equation it came from (for a fusion, its root's): the model's module
# path, under `jvp(...)` in the forward pass and `transpose(jvp(...))` in the backward pass.
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_SE_PARTS = ('squeeze', 'excitation', 'scale')
# SE operations by primitive, in programs whose SE block carries no named scopes.
_SE_BY_PRIMITIVE = {'reduce_sum': 'squeeze', 'reduce_max': 'squeeze', 'mul': 'scale'}
_NORM = re.compile(r'^(bn\d*|norm\d*|.*_bn|.*BatchNorm.*|.*norm)$')

# The model's own equations run under `jvp(<model class>)`; the loss's under `jvp(jit(...))`.
_IN_MODEL = re.compile(r'(?:^|/)(?:transpose\()?jvp\((?!jit\()\w+\)')


def _part(op_name: str) -> tuple[str, str]:
  """(phase, part) of an instruction from its op name.

  phase: 'forward', 'backward' or 'update'. part: 'SE squeeze' / 'SE
  excitation' / 'SE scale', 'convolution', 'batchnorm', 'other layers'
  (activations, residual sums, pooling, the classifier), 'loss and metrics',
  'finiteness check' (config.nan_policy), 'optimizer'.
  """
  if 'transpose(jvp(' in op_name:
    phase = 'backward'
  elif 'jvp(' in op_name:
    phase = 'forward'
  else:
    phase = 'update'
  segments = op_name.split('/')
  primitive = segments[-1]
  if not _IN_MODEL.search(op_name):
    if phase != 'update' or 'log_softmax' in op_name or 'take_along_axis' in op_name:
      return phase, 'loss and metrics'
    if primitive in ('reduce_and', 'is_finite'):
      return phase, 'finiteness check'
    return phase, 'optimizer'
  if 'se' in segments:
    inner = segments[segments.index('se') + 1:-1]
    part = next((p for p in inner if p in _SE_PARTS), None)
    if part is None:  # a program whose SE block has no named scopes
      part = 'excitation' if inner else _SE_BY_PRIMITIVE.get(primitive, 'excitation')
    return phase, f'SE {part}'
  if primitive.startswith('conv_general_dilated'):
    return phase, 'convolution'
  if any(_NORM.match(s) for s in segments[1:-1]):
    return phase, 'batchnorm'
  return phase, 'other layers'


def cycle_split(hlo_text: str) -> dict[str, dict[str, int]]:
  """{part: {phase: estimated cycles}} over the optimized program's instructions.

  The estimates are the compiler's, one per scheduled instruction; they do not
  add up to `optimal_seconds` (instructions overlap, and the estimates include
  fixed per-instruction costs), so the split is of shares, not of time. A
  fusion counts to the part of its root: an operation fused into another's
  instruction (the SE scale into the residual sum after it) costs that one's
  part. Instructions with no op name (copies the compiler adds) are
  'compiler-added'.
  """
  split: dict[str, dict[str, int]] = {}
  for line in hlo_text.splitlines():
    cycles = _CYCLES.search(line)
    if not cycles:
      continue
    name = _OP_NAME.search(line)
    phase, part = _part(name.group(1)) if name else ('update', 'compiler-added')
    entry = split.setdefault(part, {})
    entry[phase] = entry.get(phase, 0) + int(cycles.group(1))
  return split


@dataclasses.dataclass
class StepReport:
  """One compiled step on one device of the slice."""
  name: str  # 'train' or 'eval'
  batch_per_device: int
  compile_seconds: float
  argument_bytes: int
  temp_bytes: int
  output_bytes: int
  alias_bytes: int  # outputs written into donated arguments
  flops: float  # per device per step
  optimal_seconds: Optional[float]  # the compiler's modelled step time; None where invalid
  collectives: dict
  modelled_seconds: Optional[float] = None  # the compiler's figure as it gave it, even if invalid
  cycles: Optional[dict] = None  # cycle_split of the train step

  @property
  def hbm_bytes(self) -> int:
    """Peak HBM: arguments, temporaries, and the outputs not written into donated arguments."""
    return self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes


def _report(name, compiled, batch_per_device, seconds, time_valid) -> StepReport:
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0]
  raw = cost.get('optimal_seconds')
  optimal = raw if time_valid and raw is not None and raw > 0 else None
  return StepReport(name=name, batch_per_device=batch_per_device, compile_seconds=round(seconds, 1),
                    argument_bytes=int(memory.argument_size_in_bytes), temp_bytes=int(
                        memory.temp_size_in_bytes), output_bytes=int(memory.output_size_in_bytes),
                    alias_bytes=int(memory.alias_size_in_bytes), flops=float(cost.get('flops',
                                                                                      0.0)),
                    optimal_seconds=optimal, collectives=collectives(compiled.as_text()),
                    modelled_seconds=None if raw is None else float(raw),
                    cycles=cycle_split(compiled.as_text()) if name == 'train' else None)


@dataclasses.dataclass
class CompileReport:
  """The train and eval steps of a config compiled for a slice."""
  model: str
  dtype: str
  slice: Slice
  devices: int
  image_shape: tuple
  params: int
  train: StepReport
  eval: Optional[StepReport]
  # search_largest_batch's result: {'images_per_chip', 'hbm_bytes_per_chip', 'compiles'}
  largest_batch: Optional[dict] = None

  @property
  def devices_per_chip(self) -> int:
    return self.devices // self.slice.chips

  @property
  def device_hbm_bytes(self) -> int:
    return self.slice.generation.hbm_bytes // self.devices_per_chip

  @property
  def fits(self) -> bool:
    steps = [s for s in (self.train, self.eval) if s is not None]
    return all(s.hbm_bytes <= self.device_hbm_bytes for s in steps)

  def summary(self) -> dict:
    """The figures per chip (a chip's devices added up) and per slice, as plain numbers."""
    gen = self.slice.generation
    per_chip = self.devices_per_chip
    out = {
        'model': self.model,
        'dtype': self.dtype,
        'slice': self.slice.name,
        'topology': self.slice.topology,
        'chips': self.slice.chips,
        'devices': self.devices,
        'image_shape': list(self.image_shape),
        'params': self.params,
        'hbm_per_chip_bytes': gen.hbm_bytes,
        'peak_bf16_flops_per_chip': gen.peak_bf16_flops,
        'time_model_valid': gen.time_model_valid,
        'fits': self.fits
    }
    if self.largest_batch is not None:
      out['largest_train_batch'] = self.largest_batch
    for step in (self.train, self.eval):
      if step is None:
        continue
      images = step.batch_per_device * per_chip
      entry = {
          'images_per_chip': images,
          'compile_seconds': step.compile_seconds,
          'argument_bytes_per_chip': step.argument_bytes * per_chip,
          'temp_bytes_per_chip': step.temp_bytes * per_chip,
          'output_bytes_per_chip': step.output_bytes * per_chip,
          'alias_bytes_per_chip': step.alias_bytes * per_chip,
          'hbm_bytes_per_chip': step.hbm_bytes * per_chip,
          'fits': step.hbm_bytes <= self.device_hbm_bytes,
          'flops_per_chip': step.flops * per_chip,
          'flops_per_image': step.flops / step.batch_per_device,
          'modelled_step_seconds': step.optimal_seconds,
          'compiler_optimal_seconds': step.modelled_seconds,
          'collectives_per_device': step.collectives,
      }
      if step.cycles:
        entry['cycle_share_percent'] = cycle_shares(step.cycles)
      if step.optimal_seconds:
        chip_rate = images / step.optimal_seconds
        entry.update(images_per_second_per_chip=chip_rate,
                     images_per_second_per_slice=chip_rate * self.slice.chips,
                     mfu=step.flops * per_chip / step.optimal_seconds / gen.peak_bf16_flops)
      out[step.name] = entry
    return out


def compile_lowered(lowered, what: str, tpu_slice: Slice):
  """`lowered.compile()`; a program the compiler cannot fit in HBM is a ConfigError."""
  try:
    return lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    raise ConfigError(f'{what} does not fit in {tpu_slice.name}: {str(e).splitlines()[0][:300]}; '
                      'use a smaller batch or a larger slice') from e


def _train_hbm(config: ml_collections.ConfigDict, mesh: Mesh, per_device: int,
               tpu_slice: Slice) -> Optional[int]:
  """HBM per device of the train step at `per_device` images per device; None if refused."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.batch_size = per_device * mesh.size
  run = build_run(config, mesh)
  train = step_lib.make_train_step(run.model, config, mesh, run.schedule, run.info.num_classes)
  try:
    compiled = compile_lowered(train.lower(run.abstract_state(), _train_batch(run)), 'the step',
                               tpu_slice)
  except ConfigError:
    return None  # RESOURCE_EXHAUSTED: more than the compiler can place
  memory = compiled.memory_analysis()
  return int(memory.argument_size_in_bytes + memory.temp_size_in_bytes +
             memory.output_size_in_bytes - memory.alias_size_in_bytes)


def _next_guess(measured: dict, capacity: int, low: int, high: Optional[int], bisect: bool) -> int:
  """The batch to compile next: on the line through the two points nearest the capacity, or
  halfway between the bounds (`bisect`: padding makes small batches' HBM far from affine, where
  the line alone could creep along the bracket)."""
  if high is not None and bisect:
    return (low + high) // 2
  (b1, m1), (b2, m2) = (sorted(measured.items(), key=lambda p: abs(p[1] - capacity)) * 2)[:2]
  slope = (m1 - m2) / (b1 - b2) if b1 != b2 else 0
  guess = int(b1 + (capacity - m1) / slope) if slope > 0 else 2 * max(measured)
  return max(low + 1, guess if high is None else min(guess, high - 1))


def search_largest_batch(config: ml_collections.ConfigDict, mesh: Mesh, tpu_slice: Slice,
                         first: StepReport, capacity: int, log=None, max_compiles: int = 6) -> dict:
  """The largest train batch per device that the compiler fits in `capacity` bytes.

  A step's HBM is nearly affine in its batch (the state is fixed; activations
  and the batch grow with it), so each guess is where the line through the two
  compiled points nearest the capacity crosses it, kept between the largest
  batch that fits and the smallest that does not; every third guess with both
  bounds known halves the bracket instead. Every guess is compiled: the
  answer is a batch the compiler fitted. The search ends when the two bounds
  are adjacent (the answer is exact) or after `max_compiles` compiles.
  """
  measured = {first.batch_per_device: first.hbm_bytes}  # batch -> HBM bytes per device
  refused = set()  # batches the compiler could not place at all
  guess = 2 * first.batch_per_device if first.hbm_bytes <= capacity else max(
      1, first.batch_per_device // 2)
  compiles = 0
  while compiles < max_compiles and guess >= 1 and guess not in measured and guess not in refused:
    if log:
      log(f'Searching the largest train batch: compiling at {guess} images per device...')
    hbm = _train_hbm(config, mesh, guess, tpu_slice)
    compiles += 1
    if hbm is None:
      refused.add(guess)
    else:
      measured[guess] = hbm
    fitting = [b for b, m in measured.items() if m <= capacity]
    over = [b for b, m in measured.items() if m > capacity] + sorted(refused)
    low, high = max(fitting, default=0), min(over, default=None)
    if high is not None and high - low <= 1:
      break
    guess = _next_guess(measured, capacity, low, high, bisect=compiles % 3 == 0)
  fitting = [b for b, m in measured.items() if m <= capacity]
  best = max(fitting, default=None)
  over = [b for b, m in measured.items() if m > capacity] + sorted(refused)
  return {
      'images_per_device': best,
      'hbm_bytes_per_device': measured.get(best),
      # The smallest batch compiled that does not fit: best + 1 when the search is exact.
      'smallest_over': min(over, default=None),
      'compiles': compiles,
      'compiled': {
          str(b): measured.get(b) for b in sorted(set(measured) | refused)
      }
  }


def compile_for_slice(config: ml_collections.ConfigDict, slice_name: str, with_eval: bool = True,
                      log=None, search_batch: bool = False) -> CompileReport:
  """Builds the config's train (and eval) step and compiles it for `slice_name`.

  Raises:
    ConfigError: an unknown slice, no TPU compiler, or a config the slice
      cannot run (a batch that does not split over its devices, ...).
  """
  # pylint: disable=g-import-not-at-top  (check imports the models and the analysis)
  from se_flax import check
  from se_flax.models import summary as summary_lib
  tpu_slice = topology(slice_name)
  devices = slice_devices(tpu_slice)
  check.check_config(config, num_devices=len(devices), num_processes=1)
  mesh = slice_mesh(devices)
  run = build_run(config, mesh)
  train_lowered, eval_lowered = lower_steps(run)
  time_valid = tpu_slice.generation.time_model_valid
  reports = []
  for name, lowered, batch in (('train', train_lowered, config.batch_size),
                               ('eval', eval_lowered if with_eval else None,
                                config.eval_batch_size)):
    if lowered is None:
      reports.append(None)
      continue
    if log:
      log(f'Compiling the {name} step for {tpu_slice.name} ({tpu_slice.topology}, '
          f'{len(devices)} devices)...')
    start = time.time()
    compiled = compile_lowered(
        lowered, f'the {name} step of {config.model.name} at {batch // len(devices)} images per '
        f'device', tpu_slice)
    reports.append(_report(name, compiled, batch // len(devices), time.time() - start, time_valid))
  params = summary_lib.count_params(run.abstract_state().params)
  report = CompileReport(model=config.model.name, dtype=str(config.model.dtype), slice=tpu_slice,
                         devices=len(devices), image_shape=tuple(run.info.image_shape),
                         params=params, train=reports[0], eval=reports[1])
  if search_batch:
    found = search_largest_batch(config, mesh, tpu_slice, reports[0], report.device_hbm_bytes,
                                 log=log)
    chip = lambda n: None if n is None else n * report.devices_per_chip
    report.largest_batch = {
        'images_per_chip': chip(found['images_per_device']),
        'hbm_bytes_per_chip': chip(found['hbm_bytes_per_device']),
        'smallest_over_per_chip': chip(found['smallest_over']),
        'compiles': found['compiles'],
        'hbm_bytes_per_chip_compiled': {
            str(chip(int(b))): chip(m) for b, m in found['compiled'].items()
        },
    }
  return report


def cycle_shares(split: dict[str, dict[str, int]]) -> dict[str, float]:
  """{part: percent of all estimated cycles}, largest first, and 'SE' for the three SE parts."""
  total = sum(sum(v.values()) for v in split.values()) or 1
  shares = {
      part: round(100 * sum(v.values()) / total, 2)
      for part, v in sorted(split.items(), key=lambda kv: -sum(kv[1].values()))
  }
  shares['SE'] = round(sum(v for k, v in shares.items() if k.startswith('SE ')), 2)
  return shares


def _flops(n):
  return f'{n / 1e12:.3f} TFLOP' if n >= 1e12 else f'{n / 1e9:.4g} GFLOP'


def _gb(n):
  return f'{n / 1e9:.2f} GB'


def format_report(report: CompileReport) -> str:
  """The table `--mode=compile` prints."""
  s = report.summary()
  gen = report.slice.generation
  lines = [
      f'{s["model"]} ({s["dtype"]}) on {s["slice"]}: topology {s["topology"]}, '
      f'{s["chips"]} chips, {s["devices"]} devices; {s["params"]:,} parameters; '
      f'input {tuple(s["image_shape"])}'
  ]
  for name in ('train', 'eval'):
    if name not in s:
      continue
    e = s[name]
    verdict = 'fits' if e['fits'] else 'DOES NOT FIT'
    lines += [
        f'{name} step, {e["images_per_chip"]} images per chip (compiled in '
        f'{e["compile_seconds"]:.0f} s):',
        f'  HBM per chip: {_gb(e["hbm_bytes_per_chip"])} of {_gb(gen.hbm_bytes)}: {verdict} '
        f'(arguments {_gb(e["argument_bytes_per_chip"])}, temporaries '
        f'{_gb(e["temp_bytes_per_chip"])}, outputs {_gb(e["output_bytes_per_chip"])}, '
        f'{_gb(e["alias_bytes_per_chip"])} of them into donated arguments)',
        f'  FLOPs per chip per step: {_flops(e["flops_per_chip"])}; per image: '
        f'{_flops(e["flops_per_image"])}'
    ]
    if e.get('modelled_step_seconds'):
      lines += [
          f'  modelled step time: {e["modelled_step_seconds"] * 1e3:.2f} ms; images/s: '
          f'{e["images_per_second_per_chip"]:,.0f} per chip, '
          f'{e["images_per_second_per_slice"]:,.0f} per slice',
          f'  modelled MFU: {100 * e["mfu"]:.1f}% of {gen.peak_bf16_flops / 1e12:.0f} '
          'TFLOP/s bf16 per chip'
      ]
    else:
      raw = e['compiler_optimal_seconds']
      why = (f'this libtpu does not model {gen.name}'
             if not gen.time_model_valid else 'the compiler gave no positive time for this program')
      lines.append(f'  modelled step time: not reported ({why}; its optimal_seconds: {raw})')
    if 'cycle_share_percent' in e:
      shares = e['cycle_share_percent']
      lines.append('  the compiler\'s cycle estimates by part (% of all instructions\'): ' +
                   ', '.join(f'{k} {v:.1f}' for k, v in shares.items() if k != 'SE') +
                   f'; SE in all {shares["SE"]:.1f}')
    coll = e['collectives_per_device']
    if coll:
      lines.append('  collectives per device: ' + '; '.join(
          f'{kind} x{v["count"]} {v["bytes"] / 1e6:.3f} MB' for kind, v in sorted(coll.items())))
    else:
      lines.append('  collectives per device: none')
  largest = s.get('largest_train_batch')
  if largest:
    if largest['images_per_chip']:
      over = largest['smallest_over_per_chip']
      exact = over is not None and over - largest['images_per_chip'] <= report.devices_per_chip
      bound = ('' if over is None else f'; {over:,} does not fit'
               if exact else f'; not searched up to {over:,}, which does not fit')
      lines.append(f'largest train batch that fits: {largest["images_per_chip"]:,} images per chip '
                   f'({_gb(largest["hbm_bytes_per_chip"])} of {_gb(gen.hbm_bytes)}{bound}; '
                   f'{largest["compiles"]} more compiles of the train step)')
    else:
      lines.append('largest train batch that fits: none, not even 1 image per device')
  lines.append('The step time is the compiler\'s model of the devices alone (no input pipeline, '
               'no host), not a measurement.')
  return '\n'.join(lines)


REPORT_FILE = 'compile_{slice}.json'


def run(config: ml_collections.ConfigDict, workdir: str, slice_name: Optional[str],
        search_batch: bool = True) -> int:
  """`--mode=compile`: compiles the config's steps for `slice_name`, prints and saves the report.

  The report goes to WORKDIR/compile_<slice>.json, whether or not the steps fit.

  Raises:
    ConfigError: no or an unknown --topology, no TPU compiler, a config the
      slice cannot run, or steps that do not fit in a chip's HBM (after the
      report is printed and saved).
  """
  # pylint: disable=g-import-not-at-top
  import json

  from se_flax import errors
  from se_flax import paths
  if not slice_name:
    raise ConfigError(f'--mode=compile needs --topology, e.g. --topology=v5p-8; known: '
                      f'{", ".join(known_slices())}')
  topology(slice_name)  # an unknown name fails before libtpu starts
  report = compile_for_slice(config, slice_name, log=lambda m: print(m, flush=True),
                             search_batch=search_batch)
  print(format_report(report), flush=True)
  if workdir:
    path = paths.resolve(workdir) / REPORT_FILE.format(slice=slice_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.summary(), indent=1) + '\n')
    print(f'Wrote {path}', flush=True)
  if not report.fits:
    s = report.summary()
    worst = max((s[k]['hbm_bytes_per_chip'] for k in ('train', 'eval') if k in s))
    raise ConfigError(f'{config.model.name} does not fit in {slice_name}: '
                      f'{_gb(worst)} of HBM per chip, of {_gb(report.slice.generation.hbm_bytes)}; '
                      'use a smaller config.batch_size (or eval_batch_size) or a larger slice')
  return errors.EXIT_OK
