"""Which checkpoint step to read: the newest readable one, past unfinished and damaged steps.

checkpoint.py's `TrainCheckpointer` stores and reads the steps; this module
decides which of them to trust and deals with those that cannot be read.

* Unfinished saves. Orbax writes into `<step>.orbax-checkpoint-tmp-<t>` and
  renames when done, so a killed save leaves a tmp directory.
  `unfinished_saves` names their steps (a writable checkpointer lets Orbax
  remove them).
* Another run's checkpoint. A stored tree or shapes that differ from the
  restore target are not damage: `check_structure` raises
  `CheckpointMismatchError` listing the paths.
* Damage. A finished step directory can still be damaged later (truncated or
  deleted files). `newest_readable` tries the steps newest first and keeps
  the first that reads; `report_damage` warns once per damaged step and, for
  a run that owns the workdir, moves it aside to `<step>.corrupt-<time>`, so
  that the resumed run can write that step again.

With several processes, all must see the same files (shared storage), so that
they agree on which steps are damaged; process 0 moves them aside.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils

from se_flax.train import orbax_quiet

TMP_MARKER = '.orbax-checkpoint-tmp'
MAX_LISTED = 8

# (step, why it could not be read)
Failure = tuple[int, str]


class CheckpointMismatchError(ValueError):
  """A checkpoint's tree structure or shapes differ from the restore target."""

  def __init__(self, message: str, step: Optional[int] = None):
    super().__init__(message)
    self.step = step


def unfinished_saves(directory: epath.Path) -> list[int]:
  """The steps whose save left a tmp directory in `directory` (a killed async write)."""
  if not directory.exists():
    return []
  steps = []
  for path in directory.iterdir():
    name = path.name
    if TMP_MARKER in name and name.split('.', 1)[0].isdigit():
      steps.append(int(name.split('.', 1)[0]))
  return sorted(steps)


def check_structure(stored: Any, target: Any, step: int, directory: epath.Path) -> None:
  """Raises CheckpointMismatchError if the `stored` tree (step's metadata) differs from `target`."""
  problems = _describe_mismatch(_flat_shapes(stored), _flat_shapes(target))
  if problems:
    raise CheckpointMismatchError(
        f'checkpoint step {step} in {directory} does not match the state being '
        'restored (a different model, optimizer or config?): ' + '; '.join(problems), step)


def newest_readable(candidates: Sequence[int], read: Callable[[int], Any],
                    directory: epath.Path) -> tuple[Optional[int], Any, list[Failure]]:
  """(step, read(step)) of the first of `candidates` that reads, and the failures before it.

  The step is None when none reads. A CheckpointMismatchError is not damage and
  propagates.
  """
  failures = []
  for step in candidates:
    try:
      return step, read(step), failures
    except CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-exception-caught
      # tensorstore raises bare Exception/ValueError and json a JSONDecodeError:
      # any failure to read a structurally matching checkpoint is damage.
      failures.append((step, reason(e)))
      orbax_quiet.mark_damaged(os.fspath(directory / str(step)))
  return None, None, failures


def report_damage(directory: epath.Path, failures: Sequence[Failure], restored: int, *,
                  move_aside: bool) -> bool:
  """One warning per damaged step; with `move_aside`, the steps are renamed out of the way.

  Returns:
    Whether a step was moved aside (the caller's list of steps is stale then).
  """
  aside = _move_aside(directory, [s for s, _ in failures]) if move_aside else {}
  for step, why in failures:
    action = (f'moved aside to {aside[step].name}, resuming from step {restored}'
              if step in aside else f'left in place, using step {restored}')
    logging.warning('Checkpoint step %d in %s is unreadable (%s); %s.', step, directory, why,
                    action)
  return bool(aside)


def _move_aside(directory: epath.Path, steps: Sequence[int]) -> dict[int, epath.Path]:
  """Renames damaged step directories so they stop counting as checkpoints; step -> new path."""
  if not steps:
    return {}
  stamp = time.strftime('%Y%m%d-%H%M%S')
  aside = {}
  for step in steps:
    aside[step] = directory / f'{step}.corrupt-{stamp}'
    path = directory / str(step)
    if jax.process_index() == 0 and path.exists():
      path.rename(aside[step])
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('se_flax_checkpoint_quarantine')
  return aside


def reason(e: Exception) -> str:
  """The first line of `e`, without the tensorstore details that follow it."""
  text = str(e).splitlines()[0] if str(e) else ''
  text = text.split(' See full TensorStore details')[0]
  return f'{type(e).__name__}: {text[:200]}'


def _key_name(key: Any) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Leaf path ('opt_state.1.0.trace.Dense_0.kernel', as Orbax names it) -> shape."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {
      '.'.join(_key_name(k) for k in path): tuple(getattr(leaf, 'shape',
                                                          ())) for path, leaf in leaves
  }


def _describe_mismatch(stored: Mapping[str, tuple], wanted: Mapping[str, tuple]) -> list[str]:
  problems = []
  missing = sorted(set(wanted) - set(stored))
  extra = sorted(set(stored) - set(wanted))
  differ = sorted(k for k in set(stored) & set(wanted) if stored[k] != wanted[k])
  if missing:
    problems.append(f'{len(missing)} missing from the checkpoint: {missing[:MAX_LISTED]}')
  if extra:
    problems.append(f'{len(extra)} in the checkpoint but not in the target: {extra[:MAX_LISTED]}')
  if differ:
    shown = [f'{k}: checkpoint {stored[k]} vs target {wanted[k]}' for k in differ[:MAX_LISTED]]
    problems.append(f'{len(differ)} with different shapes: {shown}')
  return problems
