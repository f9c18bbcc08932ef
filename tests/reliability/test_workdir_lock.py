"""One training run per workdir: a second run stops at once naming the first; dead runs' locks go.

The first tests run two real main.py processes on one workdir; the others
take the lock in this process from lock files written as a dead or a live
holder would have left them.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from se_flax import errors
from se_flax.train import lock as lock_lib
from tests.integration import harness

LONG = ('--config.num_train_steps=100000',)


def test_second_run_on_a_workdir_stops_naming_the_first(digits_data, jax_cache, tmp_path):
  workdir = tmp_path / 'run'
  first = harness.start(workdir, digits_data, *LONG, cache_dir=jax_cache, log=tmp_path / 'first')
  try:
    harness.wait_until(lambda: harness.checkpoint_steps(workdir), first, what='a checkpoint')
    holder = json.loads((workdir / lock_lib.LOCK_FILE).read_text())
    code, out, err = harness.run(workdir, digits_data, *LONG, cache_dir=jax_cache,
                                 log=tmp_path / 'second')
    assert code == errors.EXIT_CONFIG_ERROR, harness.describe(code, out, err)
    lines = [l for l in err.splitlines() if l.startswith('error: ')]
    assert len(lines) == 1, err
    assert f'pid {first.pid} on host {socket.gethostname()}' in lines[0]
    assert f"started {holder['started']}" in lines[0] and 'another --workdir' in lines[0]
    assert 'Traceback' not in err
    assert first.poll() is None, 'the first run must go on'
    # The second run left the first one's lock alone.
    assert json.loads((workdir / lock_lib.LOCK_FILE).read_text()) == holder
  finally:
    harness.stop(first, signal.SIGTERM)
  code, out, err = harness.finish(first)
  assert code == errors.EXIT_PREEMPTED, harness.describe(code, out, err)
  assert not (workdir / lock_lib.LOCK_FILE).exists(), 'the lock is released on exit'


def _dead_pid():
  proc = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  return int(proc.stdout)


def test_lock_of_a_killed_run_is_taken_over(digits_run, tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  pid = _dead_pid()
  (workdir / lock_lib.LOCK_FILE).write_text(
      json.dumps({
          'host': socket.gethostname(),
          'pid': pid,
          'started': 'earlier',
          'token': 'x'
      }))
  code, out, err = digits_run('--config.num_train_steps=3', workdir=workdir)
  assert code == 0, harness.describe(code, out, err)
  assert f'took over the lock of a run that is gone (pid {pid} on host' in out
  assert not (workdir / lock_lib.LOCK_FILE).exists()


def _write_lock(path, host, pid, age):
  path.write_text(json.dumps({'host': host, 'pid': pid, 'started': 'then', 'token': 't'}))
  past = time.time() - age
  os.utime(path, (past, past))


def test_live_holder_on_another_host_keeps_the_lock(tmp_path):
  _write_lock(tmp_path / lock_lib.LOCK_FILE, 'elsewhere', 1, age=5)
  with pytest.raises(errors.WorkdirLockedError, match='pid 1 on host elsewhere, started then'):
    lock_lib.WorkdirLock(str(tmp_path)).acquire()
  assert json.loads((tmp_path / lock_lib.LOCK_FILE).read_text())['host'] == 'elsewhere'


def test_silent_holder_on_another_host_is_taken_over(tmp_path):
  _write_lock(tmp_path / lock_lib.LOCK_FILE, 'elsewhere', 1, age=lock_lib.stale_seconds() + 60)
  with lock_lib.WorkdirLock(str(tmp_path)).acquire() as held:
    assert 'pid 1 on host elsewhere' in held.note
    assert json.loads((tmp_path / lock_lib.LOCK_FILE).read_text())['pid'] == os.getpid()
  assert not (tmp_path / lock_lib.LOCK_FILE).exists()


def test_live_process_on_this_host_keeps_the_lock(tmp_path):
  # This test's own process is alive, whatever its heartbeat says.
  _write_lock(tmp_path / lock_lib.LOCK_FILE, socket.gethostname(), os.getpid(),
              age=lock_lib.stale_seconds() + 60)
  with pytest.raises(errors.WorkdirLockedError, match=f'pid {os.getpid()}'):
    lock_lib.WorkdirLock(str(tmp_path)).acquire()


def test_release_leaves_a_lock_taken_over_by_another_run(tmp_path):
  held = lock_lib.WorkdirLock(str(tmp_path)).acquire()
  _write_lock(tmp_path / lock_lib.LOCK_FILE, 'elsewhere', 7, age=0)
  held.release()
  assert json.loads((tmp_path / lock_lib.LOCK_FILE).read_text())['pid'] == 7


@pytest.mark.parametrize('content', [b'\xff\xfe\x00garbage\x80', b'[1, 2]', b''])
def test_damaged_lock_file_counts_by_its_age(tmp_path, content):
  path = tmp_path / lock_lib.LOCK_FILE
  path.write_bytes(content)
  with pytest.raises(errors.WorkdirLockedError, match='pid \\? on host \\?'):
    lock_lib.WorkdirLock(str(tmp_path)).acquire()  # fresh: maybe a run still writing it
  past = time.time() - lock_lib.stale_seconds() - 60
  os.utime(path, (past, past))
  with lock_lib.WorkdirLock(str(tmp_path)).acquire() as held:
    assert 'took over the lock of a run that is gone' in held.note
  assert not path.exists()
