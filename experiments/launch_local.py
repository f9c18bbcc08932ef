"""Runs a sweep's runs as subprocesses of this machine, one or N at a time.

Finished runs are skipped and interrupted ones resumed: main.py resumes from
the newest checkpoint in its workdir, so re-running the sweep command after a
crash completes the sweep. A run that exits with the preemption code (42:
the loop saved a checkpoint on SIGTERM and stopped) is restarted at once, up
to `max_restarts` times. SIGTERM sent to the sweep is passed on to the runs,
which checkpoint and stop; they stay resumable. So is SIGINT (Ctrl-C): the
runs are started in their own process group, so that a Ctrl-C in the terminal
reaches them once, through the sweep, which records each run stopped by it as
'interrupted' and starts no other; the same command resumes them.

The function that runs one command is injectable (`runner`), so the skip and
resume logic is testable without training, and the TPU launcher reuses it
with `gcloud ... ssh` in place of `python main.py`.
"""

import concurrent.futures
import os
import signal
import subprocess
import threading
import time
from typing import Callable, Optional

from etils import epath

from experiments import runs as runs_lib
from experiments.manifest import now
from se_flax import errors

Runner = Callable[[list, str, str], int]  # (command, cwd, log path) -> exit code


class _Children:
  """Live subprocesses, so that a SIGTERM or SIGINT to the sweep reaches every run."""

  def __init__(self):
    self.procs = set()
    self.lock = threading.Lock()
    self.stopping = threading.Event()
    self.interrupted = threading.Event()

  def terminate(self, *unused):
    self.stopping.set()
    self._send(signal.SIGTERM)

  def interrupt(self, *unused):
    # A second Ctrl-C is passed on too: main.py then stops at once, without saving.
    self.interrupted.set()
    self.stopping.set()
    self._send(signal.SIGINT)

  def _send(self, signum):
    with self.lock:
      for proc in self.procs:
        if proc.poll() is None:
          proc.send_signal(signum)


_CHILDREN = _Children()


def interrupted() -> bool:
  """Whether the last `execute` was stopped by SIGINT (Ctrl-C)."""
  return _CHILDREN.interrupted.is_set()


def subprocess_runner(command: list, cwd: str, log_path: str) -> int:
  """Runs `command` in `cwd`, appending its stdout and stderr to `log_path`."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, 'a') as log:
    log.write(f'\n==== {now()}: {" ".join(command)}\n')
    log.flush()
    # Its own session: a Ctrl-C in the terminal reaches the run once, through the sweep.
    with _CHILDREN.lock:
      proc = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
      _CHILDREN.procs.add(proc)
    try:
      return proc.wait()
    finally:
      with _CHILDREN.lock:
        _CHILDREN.procs.discard(proc)


def _summary_line(workdir, total_steps) -> str:
  last = runs_lib.final_eval(runs_lib.read_metrics(workdir), total_steps)
  if not last:
    return ''
  return f'; top-1 error {100 * last["top1_error"]:.2f}%, top-5 error {100 * last["top5_error"]:.2f}%'


def run_one(run: dict, manifest, command: list, runner: Runner, max_restarts: int,
            say: Callable[[str], None], log_dir: Optional[str] = None,
            cwd: str = runs_lib.REPO_ROOT) -> str:
  """Runs (or skips, or resumes) one run; returns its final status.

  The log goes to WORKDIR/train.log, or to LOG_DIR/<name>.log when the
  workdir is not on this machine (a TPU VM writing to a bucket).
  """
  name, workdir, total = run['name'], run['workdir'], run['total_steps']
  if runs_lib.is_finished(workdir, total, manifest_done=run.get('status') == 'done'):
    if run.get('status') != 'done':
      manifest.update(name, status='done', exit_code=0, finished=run.get('finished') or now())
    say(f'{name}: finished before, skipped')
    return 'done'
  if _CHILDREN.stopping.is_set():
    return run.get('status', 'pending')
  log_path = (os.path.join(log_dir, f'{name}.log') if log_dir else str(
      epath.Path(workdir) / runs_lib.LOG_FILE))
  attempts = run.get('attempts') or 0
  for restart in range(max_restarts + 1):
    steps = runs_lib.checkpoint_steps(workdir)
    how = f'resuming from step {steps[-1]}' if steps else 'starting'
    say(f'{name}: {how} (log: {log_path})')
    attempts += 1
    manifest.update(name, status='running', started=now(), finished=None, exit_code=None,
                    attempts=attempts)
    t0 = time.time()
    code = runner(command, cwd, log_path)
    seconds = time.time() - t0
    if _CHILDREN.interrupted.is_set() and code != 0:
      manifest.update(name, status='interrupted', exit_code=code, finished=now())
      say(f'{name}: interrupted after {seconds:.0f} s (exit {code}); re-run the same command '
          'to resume it')
      return 'interrupted'
    if code == errors.EXIT_PREEMPTED and _CHILDREN.stopping.is_set():
      manifest.update(name, status='pending', exit_code=code, finished=now())
      say(f'{name}: stopped by SIGTERM after {seconds:.0f} s; checkpoint saved, re-run to resume')
      return 'pending'
    if code == errors.EXIT_PREEMPTED and restart < max_restarts:
      say(f'{name}: preempted (exit {code}); restarting from its checkpoint')
      continue
    break
  if code == 0 and (total is None or runs_lib.is_finished(workdir, total, manifest_done=True)):
    manifest.update(name, status='done', exit_code=0, finished=now())
    say(f'{name}: done in {seconds:.0f} s{_summary_line(workdir, total)}')
    return 'done'
  manifest.update(name, status='failed', exit_code=code, finished=now())
  why = f'exit code {code}' if code else 'exited 0 without a checkpoint at the last step'
  say(f'{name}: FAILED ({why}); see {log_path}')
  return 'failed'


def _wait_until_training(workdir, future, poll_s=0.5):
  metrics = epath.Path(workdir) / runs_lib.METRICS_FILE
  while not future.done() and not metrics.exists():
    time.sleep(poll_s)


def execute(manifest, commands: dict, parallel: int = 1, runner: Optional[Runner] = None,
            max_restarts: int = 2, say: Callable[[str], None] = print,
            log_dir: Optional[str] = None) -> dict:
  """Runs the manifest's runs named in `commands`, in its order, `parallel` at a time.

  Returns:
    {run name: final status}.
  """
  runner = runner or subprocess_runner
  entries = [e for e in manifest.data['runs'] if e['name'] in commands]
  lock = threading.Lock()

  def locked_say(message):
    with lock:
      say(message)

  previous = {}
  if threading.current_thread() is threading.main_thread():
    # The runs have their own session, so a closed terminal (SIGHUP) reaches them only
    # through the sweep: as SIGTERM, which saves a checkpoint.
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, _CHILDREN.terminate),
        signal.SIGHUP: signal.signal(signal.SIGHUP, _CHILDREN.terminate),
        signal.SIGINT: signal.signal(signal.SIGINT, _CHILDREN.interrupt)
    }
  _CHILDREN.stopping.clear()
  _CHILDREN.interrupted.clear()
  try:
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
      futures = {}
      for i, e in enumerate(entries):
        futures[e['name']] = pool.submit(run_one, manifest.run(e['name']), manifest,
                                         commands[e['name']], runner, max_restarts, locked_say,
                                         log_dir)
        if i == 0 and parallel > 1:
          # The first run prepares the data set if this machine lacks it; the others start
          # once it trains, so that two processes never prepare it at the same time.
          _wait_until_training(e['workdir'], futures[e['name']])
      return {name: f.result() for name, f in futures.items()}
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
