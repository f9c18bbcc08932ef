"""Where the SE-ResNet-50 step's extra time goes: the SE block alone, and formulations of it.

Every formulation below computes the same function as the paper's block (mean
pooling, FC -> ReLU -> FC, sigmoid, scale); they differ only in how the
program spells it, which changes what XLA fuses:

  current       se_flax.layers as they are: float32 `jnp.mean` squeeze, `nn.Dense`
  sum_x_inv     squeeze as a float32 sum times the constant 1 / (H W)
  pool_dtype    squeeze as `jnp.mean` in the compute dtype (jnp accumulates
                bf16 in float32 and the excitation casts to the compute dtype
                anyway, so the values are the same)
  conv1x1       excitation as two 1x1 `nn.Conv`s on the (N, 1, 1, C) descriptor

Two measurements:

* micro: the block alone, forward + backward (gradients for its parameters
  and its input, against a fixed random cotangent), at each of SE-ResNet-50's
  four SE shapes, minus the same harness around the identity, summed over the
  16 blocks of the network;
* `--full_step`: the whole se_resnet50 training step (the project's
  `make_train_step`, via benchmarks/throughput.py) with each formulation
  swapped into the registries, against resnet50's, timed in interleaved rounds;
* `--profile`: jax.profiler traces of both steps, and the op kinds (XLA
  fusions, kernels) whose time grows most with the SE blocks.

  .venv/bin/python benchmarks/se_block.py --batch=8 --image_size=112 --full_step --profile \
      --out=benchmarks/results/se_block_cpu.md
"""

import argparse
import contextlib
import functools
import glob
import os
import re
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import report
from benchmarks import throughput

# pylint: enable=g-import-not-at-top,wrong-import-position

# SE-ResNet-50's SE blocks: (stage, blocks, output stride, channels).
STAGES = (('layer1', 3, 4, 256), ('layer2', 4, 8, 512), ('layer3', 6, 16, 1024), ('layer4', 3, 32,
                                                                                  2048))
VARIANTS = ('current', 'sum_x_inv', 'pool_dtype', 'conv1x1')
# Profiler events that wrap or wait for others (XLA:CPU's thunk executor, its thread pool):
# counting them would count their contents twice.
CONTAINER_EVENTS = ('ThunkExecutor', 'SlinkyThreadPool', 'PjRt')

# ---------------------------------------------------------------- formulations


def _variant_ops(name):
  """(squeeze fn or None, excitation fn or None) replacing the registered 'avg' / 'fc'."""
  # pylint: disable=g-import-not-at-top
  import flax.linen as nn
  import jax.numpy as jnp
  # pylint: enable=g-import-not-at-top
  if name == 'sum_x_inv':

    def squeeze(x, spec, module):
      del spec, module
      return jnp.sum(x, axis=(1, 2), keepdims=True, dtype=jnp.float32) * (1.0 /
                                                                          (x.shape[1] * x.shape[2]))

    return squeeze, None
  if name == 'pool_dtype':

    def squeeze(x, spec, module):
      del spec, module
      return jnp.mean(x, axis=(1, 2), keepdims=True).astype(jnp.float32)

    return squeeze, None
  if name == 'conv1x1':

    def excite(z, channels, reduced, spec, module):
      conv = functools.partial(
          nn.Conv, kernel_size=(1, 1), use_bias=spec.bias, dtype=module.dtype,
          kernel_init=nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform'))
      return conv(channels, name='fc2')(nn.relu(conv(reduced, name='fc1')(z)))

    return None, excite
  return None, None


@contextlib.contextmanager
def formulation(name):
  """Swaps formulation `name` into the squeeze/excitation registries while tracing."""
  from se_flax.layers import excite as excite_lib  # pylint: disable=g-import-not-at-top
  from se_flax.layers import squeeze as squeeze_lib  # pylint: disable=g-import-not-at-top
  squeeze, excite = _variant_ops(name)
  old_squeeze, old_excite = squeeze_lib.SQUEEZES['avg'], excite_lib.EXCITATIONS['fc']
  if squeeze is not None:
    squeeze_lib.SQUEEZES['avg'] = squeeze_lib.SqueezeOp(squeeze, 1)
  if excite is not None:
    excite_lib.EXCITATIONS['fc'] = excite
  try:
    yield
  finally:
    squeeze_lib.SQUEEZES['avg'], excite_lib.EXCITATIONS['fc'] = old_squeeze, old_excite


# ---------------------------------------------------------------- micro


def _interleaved_times(fns, reps, x):
  """Median seconds per call of each `fn(params, x)`, calls interleaved across fns."""
  import jax  # pylint: disable=g-import-not-at-top
  times = {k: [] for k in fns}
  for fn, params in fns.values():
    jax.block_until_ready(fn(params, x))
  for _ in range(reps):
    for k, (fn, params) in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(params, x))
      times[k].append(time.perf_counter() - start)
  return {k: report.median_iqr(t)[0] for k, t in times.items()}


def micro(args):
  """{variant: [seconds per block at each stage]} net of the identity harness, and the harness's."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np

  from se_flax.layers.se import SEBlock
  from se_flax.layers.se import SESpec
  # pylint: enable=g-import-not-at-top
  dtype = jnp.dtype(args.dtype)
  rng = np.random.default_rng(0)
  harness, net = [], {v: [] for v in VARIANTS}
  for _, _, stride, channels in STAGES:
    side = max(1, args.image_size // stride)
    shape = (args.batch, side, side, channels)
    x = jnp.asarray(rng.standard_normal(shape), dtype)
    ct = jnp.asarray(rng.standard_normal(shape), jnp.float32)

    def compiled(apply, params):
      # Compiled here, inside the caller's `formulation`, not lazily at the first call.
      loss = lambda p, xx: jnp.sum(apply(p, xx).astype(jnp.float32) * ct)
      fn = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
      return fn, params

    fns = {'identity': compiled(lambda p, xx: xx * p, jnp.ones((), dtype))}
    for v in VARIANTS:
      with formulation(v):
        block = SEBlock(SESpec(), dtype=dtype)
        fns[v] = compiled(block.apply, block.init(jax.random.PRNGKey(0), x))
    times = _interleaved_times(fns, args.reps, x)
    harness.append(times['identity'])
    for v in VARIANTS:
      net[v].append(times[v] - times['identity'])
  return harness, net


def micro_table(args, harness, net):
  rows = []
  totals = {v: 0.0 for v in VARIANTS}
  for i, (stage, blocks, stride, channels) in enumerate(STAGES):
    side = max(1, args.image_size // stride)
    row = [stage, f'{args.batch}x{side}x{side}x{channels}', blocks, report.ms(harness[i])]
    for v in VARIANTS:
      row.append(report.ms(net[v][i]))
      totals[v] += blocks * net[v][i]
    rows.append(row)
  rows.append(['**all 16 blocks**', '', 16, ''] + [f'**{report.ms(totals[v])}**' for v in VARIANTS])
  cols = ['stage', 'U shape', 'blocks', 'harness ms'] + [f'{v} ms/block' for v in VARIANTS]
  return report.table(cols, rows), totals


# ---------------------------------------------------------------- full step


def full_step(args):
  """Interleaved train-step timings: resnet50 and se_resnet50 under each formulation."""
  lib = throughput.import_training_code()
  mesh = lib.parallel.create_mesh()
  opts = types.SimpleNamespace(dtype=args.dtype, stride_in_1x1=args.stride_in_1x1,
                               image_size=args.image_size, eval=False)
  benches = {}
  print('compiling resnet50', flush=True)
  benches['resnet50'] = throughput.ModelBench(lib, 'resnet50', args.batch, opts, mesh)
  variants = [v for v in args.full_step_variants.split(',') if v]
  if args.profile and 'current' not in variants:
    variants.insert(0, 'current')
  for v in variants:
    print(f'compiling se_resnet50 ({v})', flush=True)
    with formulation(v):
      benches[v] = throughput.ModelBench(lib, 'se_resnet50', args.batch, opts, mesh)
  for bench in benches.values():
    bench.run(args.warmup, timed=False)
  for r in range(args.rounds):
    print(f'round {r + 1}/{args.rounds}', flush=True)
    for bench in benches.values():
      bench.run(args.steps, timed=True)
  return {k: report.median_iqr(b.train_times) for k, b in benches.items()}, benches


def _profile(jax, bench, steps):
  """{op kind: (seconds, events)} per step from a jax.profiler trace of `steps` train steps.

  Kinds are event names without their numeric suffix (`ynn_fusion.12` -> `ynn_fusion`), summed
  over every thread and device line except the Python one; on a CPU the threads run
  concurrently, so these are thread-seconds, not wall time.
  """
  from jax.profiler import ProfileData  # pylint: disable=g-import-not-at-top
  totals = {}
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp):
      bench.run(steps, timed=False)
    path = glob.glob(os.path.join(tmp, '**', '*.xplane.pb'), recursive=True)[0]
    for plane in ProfileData.from_file(path).planes:
      for line in plane.lines:
        if line.name == 'python':
          continue
        for event in line.events:
          if event.name.startswith(CONTAINER_EVENTS):
            continue
          kind = re.sub(r'[.\d]+$', '', event.name)
          t, n = totals.get(kind, (0.0, 0))
          totals[kind] = (t + event.duration_ns * 1e-9 / steps, n + 1 / steps)
  return totals


def profile_table(jax, benches, steps, top=12):
  """The op kinds whose time grows most from resnet50 to se_resnet50 (current formulation)."""
  plain, se = _profile(jax, benches['resnet50'], steps), _profile(jax, benches['current'], steps)
  grow = lambda k: se.get(k, (0, 0))[0] - plain.get(k, (0, 0))[0]
  rows = []
  for kind in sorted(set(plain) | set(se), key=grow, reverse=True)[:top]:
    (tp, n_p), (ts, n_s) = plain.get(kind, (0, 0)), se.get(kind, (0, 0))
    rows.append(
        [f'`{kind}`',
         report.ms(tp),
         report.ms(ts), f'{1e3 * (ts - tp):+.1f}', f'{n_s - n_p:+.0f}'])
  return report.table([
      'op kind', 'resnet50 ms/step', 'se_resnet50 ms/step', 'difference ms',
      'events/step difference'
  ], rows)


def full_table(times, totals):
  plain = times['resnet50'][0]
  rows = [['resnet50 (no SE)', report.ms(*times['resnet50']), '1.000', '-', '-']]
  for v in [v for v in VARIANTS if v in times]:
    t, iqr = times[v]
    rows.append([
        f'se_resnet50 ({v})',
        report.ms(t, iqr), f'{t / plain:.3f}', f'{100 * (t / plain - 1):+.1f}%',
        report.ms(totals[v])
    ])
  return report.table([
      'network', 'train ms/step (IQR)', 'vs resnet50', 'SE overhead',
      'SE blocks alone (micro, fwd+bwd)'
  ], rows)


def _args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--image_size', type=int, default=112)
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  p.add_argument('--stride_in_1x1', default='preset', choices=('preset', 'true', 'false'))
  p.add_argument('--reps', type=int, default=20, help='timed calls per micro measurement')
  p.add_argument('--full_step', action='store_true', help='also time whole training steps')
  p.add_argument('--profile', action='store_true',
                 help='also trace both steps with jax.profiler and table where the time grows')
  p.add_argument('--full_step_variants', default=','.join(VARIANTS),
                 help='formulations to compile into the whole step (each costs a compilation)')
  p.add_argument('--steps', type=int, default=4)
  p.add_argument('--warmup', type=int, default=1)
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--out', default=None)
  return p.parse_args(argv)


def main(argv=None):
  args = _args(argv)
  start = time.perf_counter()
  lib = throughput.import_training_code()
  jax = lib.jax
  harness, net = micro(args)
  table, totals = micro_table(args, harness, net)
  extra = [
      f'compute dtype {args.dtype}, batch {args.batch}, image {args.image_size}x'
      f'{args.image_size}; micro: median of {args.reps} calls, each SE time net of the '
      'identity harness (`harness ms`)'
  ]
  if args.full_step or args.profile:
    extra.append(f'full step: {args.warmup} warm-up steps, then {args.rounds} interleaved rounds '
                 f'of {args.steps} steps per network; bottleneck stride: {args.stride_in_1x1}')
  device = jax.devices()[0]
  text = report.header('The SE block: cost and formulations',
                       f'{jax.device_count()} x {device.device_kind} ({jax.default_backend()})',
                       ['jax', 'jaxlib', 'flax', 'numpy'], extra)
  text += '\n## The block alone (forward + backward)\n\n' + table + '\n'
  if args.full_step or args.profile:
    times, benches = full_step(args)
    text += '\n## In the training step\n\n' + full_table(times, totals) + '\n'
    if args.profile:
      text += ('\n## Profile: where se_resnet50\'s step spends more than resnet50\'s\n\n'
               'Thread- (CPU) or device-time per step by op kind, from jax.profiler traces of '
               f'{args.steps} steps of each; the 12 kinds that grow most.\n\n' +
               profile_table(jax, benches, args.steps) + '\n')
  text += f'\ntotal wall time {time.perf_counter() - start:.0f} s\n'
  report.emit(text, args.out)


if __name__ == '__main__':
  main()
