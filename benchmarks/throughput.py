"""Train- and eval-step images/s of se_flax models: SE overhead, compile time, memory, MFU, timm.

Everything runs through the project's own code: `create_train_state`,
`make_train_step` and `make_eval_step` on a mesh of all devices, with one
synthetic batch already on the devices, so the numbers are the step's alone
(benchmarks/input_pipeline.py and loop_overhead.py measure the rest).

Per model and per-device batch: lowering and compilation timed apart; a few
warm-up steps; then `--rounds` rounds that each time `--steps` steps of every
model in turn (interleaved, so that a change in machine load hits every model
alike), each step closed by `block_until_ready`. Reported: the median step
time and its interquartile range, images/s, XLA's memory estimate of the
compiled step and the device's peak where `memory_stats()` gives one, and MFU
where the device's peak rate is known. SE overhead is each `se_X` model's step
time over its plain twin `X`'s, from the same run.

With `--timm`, timm's counterparts are timed at the same per-device batch and
image size by benchmarks/timm_throughput.py under `--torch_python` (torch and
timm usually live in another environment than jax), before jax touches the
devices, so the two never share accelerator memory.

  .venv/bin/python benchmarks/throughput.py --models=se_resnet50,resnet50 --batch=8 \
      --image_size=112 --dtype=float32 --timm --torch_python=.venv-torch/bin/python \
      --out=benchmarks/results/throughput_cpu.md
"""

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import report
from benchmarks import timm_throughput

# pylint: enable=g-import-not-at-top,wrong-import-position

# Dense peak FLOP/s per device, by a substring of `device.device_kind`, for the
# compute dtype. Sources: NVIDIA H100 datasheet (SXM: BF16 1,979 and TF32 989
# TFLOP/s *with sparsity*, half that dense; PCIe: 1,513 / 756); NVIDIA H200
# datasheet (SXM: the H100 SXM's rates); NVIDIA A100 datasheet (BF16 312, TF32
# 156 dense); Google Cloud TPU system-architecture pages (bf16 per chip: v4
# 275, v5e 197, v5p 459, v6e 918). Float32 on GPUs is counted at the TF32 rate,
# which XLA's default matmul precision uses. Order matters: first match wins.
PEAK_FLOPS = (
    ('H100 PCIe', {
        'bfloat16': 756e12,
        'float32': 378e12
    }),
    ('H100', {
        'bfloat16': 989e12,
        'float32': 494.5e12
    }),
    ('H200', {
        'bfloat16': 989e12,
        'float32': 494.5e12
    }),
    ('A100', {
        'bfloat16': 312e12,
        'float32': 156e12
    }),
    ('TPU v4', {
        'bfloat16': 275e12
    }),
    ('TPU v5 lite', {
        'bfloat16': 197e12
    }),
    ('TPU v5e', {
        'bfloat16': 197e12
    }),
    ('TPU v5p', {
        'bfloat16': 459e12
    }),
    ('TPU v5', {
        'bfloat16': 459e12
    }),
    ('TPU v6', {
        'bfloat16': 918e12
    }),
)
NUM_CLASSES = 1000
# Steps per epoch of ImageNet at batch 1024: only shapes the (unused) schedule.
STEPS_PER_EPOCH = 1251
SE_TARGET = 0.05  # README: SE overhead on the training step at most 5%

# ---------------------------------------------------------------- imports


def _importable(name):
  if name in sys.modules:
    return sys.modules[name] is not None  # None: made unimportable on purpose
  return importlib.util.find_spec(name) is not None


def import_training_code():
  """Imports se_flax's training modules, with a stand-in for ml_collections when it is missing.

  se_flax.train.step and .optim import ml_collections only to name
  `ConfigDict` in annotations (postponed by `from __future__ import
  annotations`), so an empty module lets them import on machines that have
  jax but not ml_collections. Nothing here imports TensorFlow.
  """
  if not _importable('ml_collections'):
    stub = types.ModuleType('ml_collections')
    stub.ConfigDict = dict
    stub.STAND_IN = True
    sys.modules['ml_collections'] = stub
  # pylint: disable=g-import-not-at-top
  import jax

  from se_flax.models import registry
  from se_flax.models import summary
  from se_flax.train import optim
  from se_flax.train import parallel
  from se_flax.train import state
  from se_flax.train import step
  return types.SimpleNamespace(jax=jax, registry=registry, summary=summary, optim=optim,
                               parallel=parallel, step=step, state=state)


class Fields(dict):
  """A dict read as attributes: the config fields that the step and the optimizer read."""

  def __getattr__(self, key):
    try:
      return self[key]
    except KeyError as e:
      raise AttributeError(key) from e

  __setattr__ = dict.__setitem__


def train_config(global_batch: int):
  """The ImageNet recipe's optimizer and step fields (configs/default.py), at `global_batch`.

  The real config when ml_collections is importable; otherwise the same
  values as plain attribute dicts.
  """
  if not getattr(sys.modules.get('ml_collections'), 'STAND_IN', False):
    from configs import default  # pylint: disable=g-import-not-at-top
    config = default.get_base_config()
  else:
    config = Fields(
        learning_rate=0.6, lr_reference_batch=1024, label_smoothing=0.0, nan_policy='stop',
        optimizer=Fields(name='sgd', momentum=0.9, nesterov=False, weight_decay=1e-4,
                         decay_bn_and_bias=True), schedule=Fields(name='step', warmup_epochs=0.0,
                                                                  step_epochs=30.0, step_factor=0.1,
                                                                  boundaries_epochs=()))
  config.batch_size = global_batch
  return config


# ---------------------------------------------------------------- one model


def peak_flops(device, dtype):
  for key, rates in PEAK_FLOPS:
    if key in device.device_kind:
      return rates.get(dtype)
  return None


def _compiled_bytes(compiled):
  """XLA's estimate of the device memory one call of `compiled` needs (donated inputs counted once)."""
  try:
    m = compiled.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes +
            m.temp_size_in_bytes)
  except Exception:  # pylint: disable=broad-except  (not every backend reports it)
    return None


def _jaxprs_in_params(params):
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      inner = getattr(item, 'jaxpr', item)
      if hasattr(inner, 'eqns'):
        yield inner


def count_macs(lib, model, shape):
  """Forward MACs of one image (se_flax.models.summary), or None where they cannot be counted."""
  try:
    return lib.summary.macs_of(model, shape)
  except AttributeError:
    # summary walks sub-jaxprs with jax.core.jaxprs_in_params, which some jax releases lack.
    if hasattr(lib.jax.core, 'jaxprs_in_params'):
      return None
    lib.jax.core.jaxprs_in_params = _jaxprs_in_params
    return count_macs(lib, model, shape)
  except Exception:  # pylint: disable=broad-except  (no MFU then, but the timings still count)
    return None


class ModelBench:
  """One model at one per-device batch: state, compiled steps, a batch on the devices, timings."""

  def __init__(self, lib, name, per_device_batch, args, mesh):
    jax = lib.jax
    self.name, self.per_device_batch = name, per_device_batch
    self.devices = mesh.devices.size
    self.global_batch = per_device_batch * self.devices
    overrides = {'dtype': args.dtype}
    if args.stride_in_1x1 != 'preset':
      overrides['stride_in_1x1'] = args.stride_in_1x1 == 'true'
    self.model = lib.registry.create_model(name, NUM_CLASSES, **overrides)
    shape = (args.image_size, args.image_size, 3)
    self.macs = count_macs(lib, self.model, shape)
    config = train_config(self.global_batch)
    tx, schedule = lib.optim.create_optimizer(config, STEPS_PER_EPOCH, 100 * STEPS_PER_EPOCH)
    self.state = lib.state.create_train_state(self.model, jax.random.PRNGKey(0), (1,) + shape, tx,
                                              mesh)
    self.params = lib.summary.count_params(self.state.params)
    rng = np.random.default_rng(0)
    local = {
        'image': rng.standard_normal((self.global_batch,) + shape, np.float32),
        'label': rng.integers(0, NUM_CLASSES, self.global_batch).astype(np.int32)
    }
    self.jax = jax
    self.batch = jax.device_put(local, lib.parallel.batch_sharding(mesh))

    train = lib.step.make_train_step(self.model, config, mesh, schedule, NUM_CLASSES)
    self.train_lower_s, self.train_compile_s, self.train_exec = self._compile(
        train, self.state, self.batch)
    self.train_bytes = _compiled_bytes(self.train_exec)
    self.eval_exec = None
    if args.eval:
      self.eval_batch = jax.device_put(dict(local, mask=np.ones(self.global_batch, np.float32)),
                                       lib.parallel.batch_sharding(mesh))
      evaluate = lib.step.make_eval_step(self.model, mesh, NUM_CLASSES)
      self.eval_lower_s, self.eval_compile_s, self.eval_exec = self._compile(
          evaluate, self.state, self.eval_batch)
    self.train_times, self.eval_times = [], []

  @staticmethod
  def _compile(fn, *call_args):
    t0 = time.perf_counter()
    lowered = fn.lower(*call_args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    return t1 - t0, time.perf_counter() - t1, compiled

  def run(self, steps, timed):
    for _ in range(steps):
      start = time.perf_counter()
      self.state, metrics = self.train_exec(self.state, self.batch)
      self.jax.block_until_ready((self.state, metrics))
      if timed:
        self.train_times.append(time.perf_counter() - start)
    if self.eval_exec is None:
      return
    for _ in range(steps):
      start = time.perf_counter()
      self.jax.block_until_ready(self.eval_exec(self.state, self.eval_batch))
      if timed:
        self.eval_times.append(time.perf_counter() - start)


# ---------------------------------------------------------------- tables


def _gb(nbytes):
  return '-' if not nbytes else f'{nbytes / 2**30:.2f}'


def _rate(batch, seconds):
  return f'{batch / seconds:,.1f}' if seconds else '-'


def step_table(benches, args, peak):
  rows = []
  for b in benches:
    t, t_iqr = report.median_iqr(b.train_times)
    mfu = '-'
    if peak and b.macs:
      mfu = f'{100 * 6 * b.macs * b.global_batch / t / (peak * b.devices):.1f}%'
    row = [
        b.name, f'{b.macs / 1e9:.3f}' if b.macs else '-', f'{b.params / 1e6:.2f}M',
        f'{b.per_device_batch} x {b.devices}', f'{b.train_lower_s:.1f} + {b.train_compile_s:.1f}',
        report.ms(t, t_iqr),
        report.ms(min(b.train_times)),
        _rate(b.global_batch, t), mfu,
        _gb(b.train_bytes)
    ]
    if args.eval:
      e, e_iqr = report.median_iqr(b.eval_times)
      row += [
          f'{b.eval_lower_s:.1f} + {b.eval_compile_s:.1f}',
          report.ms(e, e_iqr),
          _rate(b.global_batch, e)
      ]
    rows.append(row)
  cols = [
      'model', 'GMACs/img', 'params', 'batch/device x devices', 'train compile s (lower + compile)',
      'train ms/step (IQR)', 'best ms', 'train img/s', 'MFU', 'train step GiB (XLA)'
  ]
  if args.eval:
    cols += ['eval compile s', 'eval ms/step (IQR)', 'eval img/s']
  return report.table(cols, rows)


def overhead_rows(benches, timm):
  """(SE bench, plain bench, timm's (median, best) ratio or None) for every measured twin pair."""
  registry = import_training_code().registry
  by_key = {(b.name, b.per_device_batch): b for b in benches}
  rows = []
  for (name, batch), se in by_key.items():
    plain = by_key.get((registry.plain_twin(name), batch)) if registry.has_se(name) else None
    if plain is None:
      continue
    ratio_timm = None
    if timm and batch in timm:
      m = timm[batch]['models']
      a, b = m.get(timm_throughput.timm_name(name)), m.get(timm_throughput.timm_name(plain.name))
      if a and b:
        ratio_timm = (report.median_iqr(a['times'])[0] / report.median_iqr(b['times'])[0],
                      min(a['times']) / min(b['times']))
    rows.append((se, plain, ratio_timm))
  return rows


def overhead_table(benches, timm):
  rows = []
  for se, plain, ratio_timm in overhead_rows(benches, timm):
    s, p = report.median_iqr(se.train_times)[0], report.median_iqr(plain.train_times)[0]
    ratio = s / p
    best = min(se.train_times) / min(plain.train_times)
    verdict = 'met' if ratio - 1 <= SE_TARGET else 'missed'
    rows.append([
        f'{se.name} / {plain.name}', se.per_device_batch,
        report.ms(s),
        report.ms(p), f'{ratio:.3f}', f'{100 * (ratio - 1):+.1f}%', f'{best:.3f}',
        f'<= +5%: {verdict}', '{:.3f} / {:.3f}'.format(*ratio_timm) if ratio_timm else '-'
    ])
  return report.table([
      'SE / plain', 'batch/device', 'SE ms (median)', 'plain ms (median)', 'ratio of medians',
      'overhead', 'ratio of bests', 'target', 'timm ratio (medians / bests)'
  ], rows)


# ---------------------------------------------------------------- main


def _args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--models', default='se_resnet50,resnet50,se_resnext50_32x4d,resnext50_32x4d')
  p.add_argument('--batch', default='8', help='per-device batch sizes, comma separated')
  p.add_argument('--image_size', type=int, default=224)
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  p.add_argument('--stride_in_1x1', default='preset', choices=('preset', 'true', 'false'),
                 help="bottleneck stride placement; 'false' is timm's layout (use it with --timm)")
  p.add_argument('--steps', type=int, default=5, help='timed steps per model per round')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps per model before round 1')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--eval', type=lambda s: s.lower() in ('1', 'true', 'yes'), default=True,
                 help='also time the eval step (true/false)')
  p.add_argument('--timm', action='store_true', help="also time timm's counterparts")
  p.add_argument('--torch_python', default=None, help='interpreter with torch and timm')
  p.add_argument('--timm_compile', action='store_true', help='torch.compile the timm models')
  p.add_argument('--deadline_s', type=float, default=0,
                 help='build no further model after this many seconds (0: no limit)')
  p.add_argument('--title', default='Training and evaluation step throughput')
  p.add_argument('--out', default=None, help='also write the report here (markdown)')
  return p.parse_args(argv)


def build_and_time(lib, args, models, batches, start):
  """Builds every (model, batch) until `--deadline_s`, then times them in interleaved rounds."""
  mesh = lib.parallel.create_mesh()
  benches, skipped = [], []
  for batch in batches:
    for name in models:
      if args.deadline_s and time.perf_counter() - start > args.deadline_s:
        skipped.append(f'{name}@{batch}')
        continue
      print(f'building and compiling {name} at batch {batch}/device', flush=True)
      bench = ModelBench(lib, name, batch, args, mesh)
      bench.run(args.warmup, timed=False)
      benches.append(bench)
  for r in range(args.rounds):
    print(f'round {r + 1}/{args.rounds}', flush=True)
    for bench in benches:
      bench.run(args.steps, timed=True)
  return benches, skipped


def main(argv=None, notes=()):
  """Runs the benchmark; `notes` (strings, or callables returning one) join the report's header."""
  args = _args(argv)
  start = time.perf_counter()
  models = [m for m in args.models.split(',') if m]
  batches = [int(b) for b in args.batch.split(',') if b]
  # timm first: jax has not touched the accelerator yet, so torch gets all of its memory.
  timm = {}
  if args.timm:
    for batch in batches:
      result = timm_throughput.launch(args, models, batch)
      if result:
        timm[batch] = result

  benches, skipped, error = [], [], None
  try:
    lib = import_training_code()
    benches, skipped = build_and_time(lib, args, models, batches, start)
  except Exception:  # pylint: disable=broad-except  (the timm half and the error still get reported)
    error = traceback.format_exc()
    print(error, file=sys.stderr, flush=True)

  extra = [
      f'compute dtype {args.dtype}, image {args.image_size}x{args.image_size}, '
      f'bottleneck stride: {args.stride_in_1x1}; {args.warmup} warm-up steps, then '
      f'{args.rounds} interleaved rounds of {args.steps} timed steps per model',
      'synthetic data already on the devices; training FLOPs = 3 x 2 x forward MACs'
  ]
  devices, peak = 'jax did not start', None
  try:
    import jax  # pylint: disable=g-import-not-at-top
    device = jax.devices()[0]
    peak = peak_flops(device, args.dtype)
    stats = device.memory_stats() or {}
    devices = f'{len(jax.devices())} x {device.device_kind} ({jax.default_backend()})'
    extra += [
        f'peak FLOP/s per device for MFU: '
        f'{f"{peak / 1e12:g} T" if peak else "unknown (no MFU)"}',
        'device peak memory (whole process, all models): ' +
        (_gb(stats.get('peak_bytes_in_use')) + ' GiB' if stats else 'not reported')
    ]
  except Exception:  # pylint: disable=broad-except  (already reported as the jax half's error)
    pass
  if skipped:
    extra.append(f'not run (past --deadline_s={args.deadline_s:g}): {", ".join(skipped)}')
  for batch, res in timm.items():
    extra.append(f'timm at batch {batch}: {res["device"]}, python {res["python"]}, '
                 f'{res["versions"]}, amp {res["amp"]}, channels-last, '
                 f'{"torch.compile" if res["compiled"] else "eager"}')
  extra += [note() if callable(note) else note for note in notes]
  text = report.header(args.title, devices, ['jax', 'jaxlib', 'flax', 'optax', 'numpy'], extra)
  if benches:
    text += '\n## Steps\n\n' + step_table(benches, args, peak) + '\n'
    text += '\n## SE overhead (SE model step time / its plain twin\'s)\n\n'
    text += overhead_table(benches, timm) + '\n'
  if timm and benches:
    text += '\n## se_flax / timm (training step, per device)\n\n' + timm_throughput.comparison_table(
        benches, timm) + '\n'
  elif timm:
    text += '\n## timm alone\n\n' + json.dumps(timm, indent=1) + '\n'
  if error:
    text += f'\n## Error in the jax half\n\n```\n{error}```\n'
  text += f'\ntotal wall time {time.perf_counter() - start:.0f} s\n'
  report.emit(text, args.out)


if __name__ == '__main__':
  main()
