"""Ctrl-C and a damaged manifest, with the sweep and its runs as real processes.

The runs are tests/experiments/fake_main.py (through --python), which saves a
checkpoint and waits like a training run, and exits 130 on SIGINT as main.py
does.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments import manifest as manifest_lib
from experiments import sweep
from se_flax import errors
from tests.experiments import fake_runs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# One run: the sweep's first value, six steps.
ARGS = [
    'experiments/reduction_ratio.py', '--dataset=digits', '--set=num_train_steps=6',
    '--only=se_reduction=2'
]
RUN = 'se_reduction=2'


def _python(tmp_path):
  """An 'interpreter' that runs fake_main.py in place of main.py."""
  path = tmp_path / 'python'
  path.write_text(f'#!/bin/sh\nexec {sys.executable} {HERE}/fake_main.py "$@"\n')
  path.chmod(0o755)
  return str(path)


def _start(tmp_path, root, **kwargs):
  return subprocess.Popen([
      sys.executable, '-m', 'experiments.sweep', *ARGS, f'--root={root}',
      f'--python={_python(tmp_path)}'
  ], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for(path, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.path.exists(path) and open(path).read():
      return open(path).read()
    time.sleep(0.05)
  raise AssertionError(f'{path} never appeared')


def _entry(root):
  with open(os.path.join(root, 'manifest.json')) as f:
    return next(r for r in json.load(f)['runs'] if r['name'] == RUN)


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  # A zombie is gone for our purpose: it no longer trains.
  with open(f'/proc/{pid}/stat') as f:
    return f.read().split(')')[-1].split()[0] != 'Z'


@pytest.mark.parametrize('to_group', [False, True], ids=['sweep pid', 'terminal group'])
def test_ctrl_c_stops_the_run_records_it_interrupted_and_the_same_command_resumes(
    tmp_path, to_group):
  root = str(tmp_path / 'sweep')
  workdir = os.path.join(root, RUN)
  proc = _start(tmp_path, root, start_new_session=to_group)
  child = int(_wait_for(os.path.join(workdir, 'pid')))
  if to_group:
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
  else:
    os.kill(proc.pid, signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == errors.EXIT_INTERRUPTED, (out, err)
  assert 'Traceback' not in err
  lines = [line for line in err.splitlines() if line.startswith('error: ')]
  assert len(lines) == 1 and 're-run the same command' in lines[0], err
  assert not _alive(child)
  # The run got one SIGINT, so it saved (a second would have stopped it at once).
  assert open(os.path.join(workdir, 'sigints')).read() == '1'
  assert _entry(root)['status'] == 'interrupted' and _entry(root)['exit_code'] == 130
  again = _start(tmp_path, root)
  out, err = again.communicate(timeout=300)
  assert again.returncode == 0, (out, err)
  assert f'{RUN}: resuming from step 2' in out
  assert _entry(root)['status'] == 'done'


def test_a_damaged_manifest_is_set_aside_and_rebuilt(tmp_path):
  root = str(tmp_path / 'sweep')
  args = [
      'experiments/reduction_ratio.py', '--dataset=digits', '--set=num_train_steps=6',
      f'--root={root}'
  ]
  assert sweep.main(args, runner=fake_runs.FakeMain(), say=lambda _: None) == 0
  path = os.path.join(root, 'manifest.json')
  text = open(path).read()
  with open(path, 'w') as f:
    f.write(text[:len(text) // 2])  # a disk that filled while it was written
  messages, again = [], fake_runs.FakeMain()
  assert sweep.main(args, runner=again, say=messages.append) == 0
  assert again.calls == []  # every run finished before: read from the workdirs
  assert any(m.startswith('warning: ') and 'manifest.json.damaged' in m for m in messages)
  assert open(path + manifest_lib.DAMAGED_SUFFIX).read() == text[:len(text) // 2]
  assert all(r['status'] == 'done' for r in json.load(open(path))['runs'])
