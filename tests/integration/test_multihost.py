"""Two processes with two CPU devices each, meeting through jax.distributed on localhost.

They must compute what one process with four devices computes on the same
global batches (as_processes.py feeds it those), only process 0 may write
metrics, and their checkpoint must restore in a one-process run.
"""

import pathlib
import re
import shutil

import numpy as np
import pytest

from tests import ports
from tests.integration import harness

# harness.DIGITS_FLAGS for 12 steps: train lines at 4, 8 and 12, evaluations at 10 and 12.
# tests/integration/test_pod_preemption.py resumes runs of these flags against the same run.
STEPS = 12
FLAGS = (f'--config.num_train_steps={STEPS}',)
# gloo's C++ note; its threads can break it over lines, hence \s+ between words.
GLOO_NOTE = (r'\[Gloo\]\s+Rank\s+\d+\s+is\s+connected\s+to\s+\d+\s+peer\s+ranks\.\s+Expected\s+'
             r'number\s+of\s+connected\s+peer\s+ranks\s+is\s+:\s+\d+')


def without_gloo_notes(text):
  """`text` without gloo's notes, also where one thread's note split another's in two."""
  while True:
    text, removed = re.subn(GLOO_NOTE, '', text)
    if not removed:
      return text


# The tests that run two-process groups, on one pytest worker in turn: the group's programs
# compile once (two groups started together would each compile them in both processes), and
# no group waits for CPU behind another while gloo connects (its set-up times out after 30 s).
two_process_runs = pytest.mark.xdist_group('two_process_runs')

COMPARED = ('loss', 'top1_error', 'top5_error', 'grad_norm', 'learning_rate', 'count')


def start_processes(workdir, data_dir, cache_dir, *flags, count=2, env_extra=None, port=None):
  """`count` main.py processes of one run, two CPU devices each, meeting on `port`."""
  port = port or ports.free_port()
  return [
      harness.start(workdir, data_dir, *flags, f'--coordinator_address=127.0.0.1:{port}',
                    f'--num_processes={count}', f'--process_id={i}', devices=2, cache_dir=cache_dir,
                    env_extra=env_extra, log=f'{workdir}.p{i}') for i in range(count)
  ]


def stderr_of(proc):
  return pathlib.Path(f'{proc.log}.err').read_text()


def start_group(workdir, data_dir, cache_dir, *flags, until, **kwargs):
  """start_processes, on a fresh port again while the coordinator finds its port taken.

  Returns the processes once `until()` holds; fails if one exits before that.
  """

  def attempt(port):
    shutil.rmtree(workdir, ignore_errors=True)  # what an attempt on a taken port left
    processes = start_processes(workdir, data_dir, cache_dir, *flags, port=port, **kwargs)
    try:
      harness.wait_until(lambda: until() or any(p.poll() is not None for p in processes),
                         timeout=400, what='the run under way')
      ports.check_group(processes, stderr_of)
      if not until():
        code, out, err = harness.finish(next(p for p in processes if p.poll() is not None))
        raise AssertionError(f'a process exited before the run got under way: '
                             f'{harness.describe(code, out, err)}')
    except BaseException:
      ports.kill(processes)
      raise
    return processes

  return ports.on_free_port(attempt)


def run_processes(workdir, data_dir, cache_dir, *flags, timeout=400, **kwargs):
  """[(exit code, stdout, stderr)] of a whole run of start_processes, retried on a taken port."""

  def attempt(port):
    shutil.rmtree(workdir, ignore_errors=True)
    processes = start_processes(workdir, data_dir, cache_dir, *flags, port=port, **kwargs)
    ports.wait_group(processes, stderr_of, timeout)
    return [harness.finish(p) for p in processes]

  return ports.on_free_port(attempt)


def assert_close(records, expected):
  assert [(r['step'], r['split']) for r in records] == [(r['step'], r['split']) for r in expected]
  for got, want in zip(records, expected):
    for key in COMPARED:
      if key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=f'{key} {want}')


@pytest.mark.slow
@two_process_runs
def test_two_processes_equal_one_process_with_four_devices(two_process_run, digits_data, jax_cache,
                                                           tmp_path):
  # One process, four devices: its own program (the cache key differs from the two processes').
  one = tmp_path / 'one'
  code, out, err = harness.run(one, digits_data, *FLAGS, devices=4, cache_dir=jax_cache,
                               script='tests/integration/as_processes.py',
                               env_extra={'EMULATED_PROCESSES': 2})
  assert code == 0, harness.describe(code, out, err)
  assert 'on 4 device(s), 1 process(es)' in out

  workdir = two_process_run
  results = [(0, pathlib.Path(f'{workdir}.p{i}.out').read_text(),
              pathlib.Path(f'{workdir}.p{i}.err').read_text()) for i in range(2)]
  assert 'on 4 device(s), 2 process(es)' in results[0][1]
  # gloo's own threads print (interleaved) connection notes; nothing else may come from process 1.
  printed = without_gloo_notes(results[1][1]).strip()
  assert not printed, f'process 1 printed {printed[:500]}'
  assert [p.name for p in workdir.iterdir()].count('metrics.jsonl') == 1
  assert len(list((workdir / 'tensorboard').iterdir())) == 1

  assert_close(harness.metric_lines(workdir), harness.metric_lines(one))
  two_params, one_params = harness.checkpoint_arrays(workdir), harness.checkpoint_arrays(one)
  for key in two_params:
    np.testing.assert_allclose(two_params[key], one_params[key], rtol=1e-4, atol=1e-6, err_msg=key)

  # The checkpoint the two processes wrote together restores in one process, on another mesh.
  copy = harness.copy_run(workdir, tmp_path / 'two')  # the shared run stays untouched
  # On two devices: the digits runs' evaluation program, which the cache holds compiled.
  code, out, err = harness.run(copy, digits_data, *FLAGS, '--mode=eval', devices=2,
                               cache_dir=jax_cache)
  assert code == 0, harness.describe(code, out, err)
  top1 = float(re.search(rf'step {STEPS} on digits/test: top-1 error ([\d.]+)', out).group(1))
  final_eval = [r for r in harness.metric_lines(workdir) if r['split'] == 'eval'][-1]
  assert top1 == pytest.approx(final_eval['top1_error'], abs=1e-4)
  assert ', 360 images' in out
