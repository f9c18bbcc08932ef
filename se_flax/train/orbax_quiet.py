"""Quiets what Orbax logs by design or leaves behind after a failed read or write.

`install()` adds the filters and the hook below; `se_flax.runtime.setup()`
calls it once per process. Importing this module changes nothing.

It sits beside the checkpoint code, which tells it the damaged paths
(`mark_damaged`), and imports no se_flax module and not Orbax: the process
set-up and the checkpoints both depend on it, it on neither, and installing
the filters costs the upfront check no Orbax import.

Three kinds of noise:
* Orbax warns on every save without metrics (periodic and preemption saves
  have none by design), and when a checkpoint manager is opened read-only.
* Orbax reads and writes a checkpoint's arrays concurrently, so one bad file
  fails many of them. Once the step directory has been named (checkpoint.py
  and checkpoint_steps.py call `mark_damaged`), the failures Orbax leaves
  unretrieved (asyncio's "Task exception was never retrieved") repeat it.
* tensorstore calls back into an Orbax event loop that has already closed,
  which only a failed read or write leaves behind ("Event loop is closed").
"""

import logging as std_logging
import sys

from absl import logging

# Step directories found damaged, or whose save failed.
_DAMAGED: set[str] = set()
_installed = False


def mark_damaged(path: str) -> None:
  """From now on, asyncio log records that name `path` are dropped."""
  _DAMAGED.add(path)


# Orbax warns on every save without metrics (periodic and preemption saves have
# none by design) and whenever a manager is opened read-only (eval, analyze).
_EXPECTED = ('did not provide metrics', 'read_only=True, setting save_interval_steps',
             'Given directory is read only')


class _PeriodicSaveFilter(std_logging.Filter):

  def filter(self, record):
    message = record.getMessage()
    return not any(text in message for text in _EXPECTED)


class _DamageNoiseFilter(std_logging.Filter):

  def filter(self, record):
    text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else '')
    return not any(path in text for path in _DAMAGED)


def _quiet_unraisable(previous):

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == 'Event loop is closed'):
      previous(unraisable)

  return hook


def install() -> None:
  """Adds the log filters and wraps `sys.unraisablehook`; a second call does nothing."""
  global _installed
  if _installed:
    return
  _installed = True
  logging.get_absl_logger().addFilter(_PeriodicSaveFilter())
  std_logging.getLogger('asyncio').addFilter(_DamageNoiseFilter())
  sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)
