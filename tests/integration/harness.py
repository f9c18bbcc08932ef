"""Running main.py in subprocesses and reading what it leaves in its workdir.

Every run here trains cifar_resnet20 on the digits data for a few steps. The
`step` schedule is used because its rates do not depend on the run's length,
so a run of k steps continues exactly into a run of N steps, and because the
compiled step is then the same program whatever N is: subprocesses share a
persistent jax compilation cache, and only the first run of a session pays
for compiling.
"""

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from tests import xla

REPO = pathlib.Path(__file__).resolve().parents[2]
TIMING_FIELDS = ('steps_per_sec', 'images_per_sec')

# The common run: 20 steps of batch 32; logs every 4 steps, checkpoints every
# 3 and evaluates every 10, so no interval divides another.
STEPS = 20
DIGITS_FLAGS = (
    '--config=configs/digits.py',
    '--config.model.name=cifar_resnet20',
    f'--config.num_train_steps={STEPS}',
    '--config.batch_size=32',
    '--config.log_every_steps=4',
    '--config.checkpoint_every_steps=3',
    '--config.eval_every_steps=10',
    '--config.keep_checkpoints=10',
    '--config.schedule.name=step',
    '--config.schedule.step_epochs=0.2',
    '--config.schedule.warmup_epochs=0',
)

# SE-ResNet-18 on 64x64 crops of a tiny ImageNet, batch 4 on two devices.
IMAGENET_FLAGS = (
    '--config=configs/imagenet.py:model=se_resnet18,batch=4',
    '--config.dataset.image_size=64',
    '--config.dataset.eval_resize=72',
    '--config.dataset.shuffle_buffer=16',
    '--config.eval_every_steps=1000',  # only at the end
    '--config.checkpoint_every_steps=2',
)


def env(devices=2, cache_dir=None, fast_compile=True, **extra):
  """The environment of a CPU-only main.py with `devices` host devices (tests/xla.py)."""
  out = dict(os.environ)
  out.update(JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=str(REPO),
             XLA_FLAGS=xla.flags(devices, fast_compile=fast_compile))
  if cache_dir:
    out.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  out.update({k: str(v) for k, v in extra.items()})
  return out


def command(workdir, data_dir, *flags, base=DIGITS_FLAGS, script='main.py'):
  args = [sys.executable, str(REPO / script), *base, f'--workdir={workdir}']
  if data_dir is not None:
    args.append(f'--config.dataset.data_dir={data_dir}')
  return args + list(flags)


def start(workdir, data_dir, *flags, devices=2, cache_dir=None, env_extra=None, base=DIGITS_FLAGS,
          script='main.py', log=None, fast_compile=None):
  """Popen of main.py; stdout and stderr go to `log`.out and `log`.err (default: beside workdir).

  fast_compile: None for the rule of tests/xla.py (the digits runs' programs at the
  default level, anything else at -O0).
  """
  if fast_compile is None:
    # base=(): eval or analyze with the config a digits run stored, so its programs too.
    fast_compile = base not in (DIGITS_FLAGS, ())
  log = pathlib.Path(log or f'{workdir}.log')
  with open(f'{log}.out', 'w') as stdout, open(f'{log}.err', 'w') as stderr:
    proc = subprocess.Popen(
        command(workdir, data_dir, *flags, base=base,
                script=script), cwd=REPO, env=env(devices, cache_dir, fast_compile=fast_compile,
                                                  **(env_extra or {})), stdout=stdout,
        stderr=stderr)
  proc.log = log
  return proc


def finish(proc, timeout=300):
  """Waits for `proc`; returns (exit code, stdout, stderr)."""
  try:
    code = proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    raise
  read = lambda suffix: pathlib.Path(f'{proc.log}.{suffix}').read_text()
  return code, read('out'), read('err')


def run(workdir, data_dir, *flags, timeout=300, **kwargs):
  return finish(start(workdir, data_dir, *flags, **kwargs), timeout)


def run_ok(workdir, data_dir, *flags, **kwargs):
  code, out, err = run(workdir, data_dir, *flags, **kwargs)
  assert code == 0, f'exit code {code}\n{out[-3000:]}\n{err[-5000:]}'
  return out, err


def describe(code, out, err):
  return f'exit code {code}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-4000:]}'


# ---------------------------------------------------------------- workdir contents


def metric_lines(workdir, after=None):
  """metrics.jsonl records without timing fields, of steps > `after` if given."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [{
      k: v for k, v in r.items() if k not in TIMING_FIELDS
  } for r in records if after is None or r['step'] > after]


def last_step_logged(workdir):
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return 0
  steps = [json.loads(line)['step'] for line in path.read_text().splitlines() if line.strip()]
  return max(steps, default=0)


def checkpoint_steps(workdir):
  root = pathlib.Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


def checkpoint_arrays(workdir, step=None):
  """{'params/...': array} of checkpoint `step` (default: the newest), read as numpy."""
  step = checkpoint_steps(workdir)[-1] if step is None else step
  path = pathlib.Path(workdir) / 'checkpoints' / str(step) / 'state'
  with ocp.StandardCheckpointer() as checkpointer:
    tree = checkpointer.metadata(path).item_metadata
    tree = getattr(tree, 'tree', tree)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    restored = checkpointer.restore(path, target)
  leaves = jax.tree_util.tree_flatten_with_path(restored)[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path_): np.asarray(v) for path_, v in leaves}


def assert_same_arrays(a, b):
  assert sorted(a) == sorted(b)
  different = [k for k in a if not np.array_equal(a[k], b[k])]
  assert not different, f'{len(different)} arrays differ, e.g. {different[:5]}'


# ---------------------------------------------------------------- processes


def wait_until(predicate, proc=None, timeout=240, interval=0.01, what='condition'):
  """Polls `predicate` until true; fails if `proc` exits first or time runs out."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return
    if proc is not None and proc.poll() is not None:
      code, out, err = finish(proc)
      raise AssertionError(f'process exited before {what}: {describe(code, out, err)}')
    time.sleep(interval)
  raise AssertionError(f'timed out waiting for {what}')


def stop(proc, sig=signal.SIGKILL):
  """Sends `sig` to `proc` (which this test started), if it still runs."""
  if proc.poll() is None:
    proc.send_signal(sig)


# ---------------------------------------------------------------- sharing across test workers


@contextlib.contextmanager
def _locked(path):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(f'{path}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def shared(root, name, build):
  """`root/name`, built once by `build(path)` even when several pytest workers ask at once."""
  path = pathlib.Path(root) / name
  with _locked(path):
    if not (path / '.complete').exists():
      if path.exists():
        shutil.rmtree(path)
      path.mkdir(parents=True)
      build(path)
      (path / '.complete').write_text('')
  return path


def copy_run(source, destination):
  """A private copy of a finished run's workdir, for a test that changes it."""
  shutil.copytree(source, destination, ignore=shutil.ignore_patterns('.complete', '*.log.*'))
  return destination
