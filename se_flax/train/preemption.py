"""Preemption and Ctrl-C: SIGTERM and SIGINT become a flag the training loop checks once per step.

The loop then saves a checkpoint of the current step and exits with
errors.EXIT_PREEMPTED (SIGTERM), so that a scheduler wrapper can requeue the
job, or errors.EXIT_INTERRUPTED (Ctrl-C); the same command resumes from that
step (se_flax/train/loop.py). A second Ctrl-C exits at once: a save in flight
is abandoned in its temporary directory, the previous checkpoints are intact.
"""

import os
import signal
import sys
import threading
from typing import Callable, Optional, Sequence

from absl import logging
from jax.experimental import multihost_utils

from se_flax import errors

_preempted = threading.Event()
_interrupted = threading.Event()


def _on_signal(signum, frame):  # pylint: disable=unused-argument
  logging.warning('Received signal %d: will checkpoint and exit with code %d.', signum,
                  errors.EXIT_PREEMPTED)
  _preempted.set()


def _on_interrupt(signum, frame):  # pylint: disable=unused-argument
  if _interrupted.is_set():
    print(
        f'Interrupted again: exiting at once with code {errors.EXIT_INTERRUPTED}; a save in '
        'flight is abandoned, the previous checkpoints are intact.', file=sys.stderr, flush=True)
    os._exit(errors.EXIT_INTERRUPTED)  # pylint: disable=protected-access
  _interrupted.set()
  _preempted.set()
  print(
      'Interrupt: saving a checkpoint after this step, then exiting (Ctrl-C again to exit '
      'at once).', file=sys.stderr, flush=True)


def _sync_manager_active() -> bool:
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return (distributed.global_state.client is not None
          and distributed.global_state.preemption_sync_manager is not None)


def install_preemption_handler(signums: Sequence[int] = (signal.SIGTERM,)) -> Callable[[], None]:
  """Turns SIGTERM into a flag that `preemption_requested` reports.

  With several processes, jax's preemption sync manager (started by
  `jax.distributed.initialize`) already listens for SIGTERM and agrees on a
  step with all hosts; a Python handler would replace its handler, so none is
  installed then and `preemption_requested` asks the sync manager.

  Returns:
    A function that puts the previous handlers back.
  """
  if _sync_manager_active():
    logging.info('Preemption: using jax.distributed preemption sync points.')
    return lambda: None
  previous = {s: signal.signal(s, _on_signal) for s in signums}
  if threading.current_thread() is threading.main_thread():
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_interrupt)

  def uninstall():
    for s, handler in previous.items():
      signal.signal(s, handler)

  return uninstall


def preemption_requested(step: Optional[int] = None) -> bool:
  """True once the run should checkpoint and exit with `errors.EXIT_PREEMPTED`.

  Call it on every step, on every process, with the same `step`: with several
  processes the answer comes from `multihost_utils.reached_preemption_sync_point`,
  which is True on all hosts at the same step.
  """
  if _preempted.is_set():
    return True
  if step is not None and _sync_manager_active():
    try:
      if multihost_utils.reached_preemption_sync_point(int(step)):
        _preempted.set()
    except RuntimeError as e:
      logging.log_first_n(logging.WARNING, 'Preemption sync unavailable: %s', 1, e)
  return _preempted.is_set()


def interrupted() -> bool:
  """True once Ctrl-C (SIGINT) asked the run to stop."""
  return _interrupted.is_set()
