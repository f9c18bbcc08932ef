"""Checkpoints in WORKDIR/checkpoints: async Orbax saves, keep-N + best, safe resume.

Layout, one directory per step (Orbax `CheckpointManager`, no step prefix):

  WORKDIR/checkpoints/<step>/state/    the TrainState arrays (OCDBT / zarr)
  WORKDIR/checkpoints/<step>/config/   the run config as JSON (`JsonSave`)
  WORKDIR/checkpoints/<step>/loop/     the loop's own state as JSON (e.g. the
                                       unlogged part of the metric window)
  WORKDIR/checkpoints/<step>/metrics/  eval metrics, when given and keep_best
  WORKDIR/checkpoints/<step>/_CHECKPOINT_METADATA, commit_success.txt

Retention. Orbax's legacy options (`max_to_keep` with `best_fn`) rank *every*
checkpoint by the metric, so the newest one is deleted as soon as its eval
error is worse than the N best, and checkpoints saved without metrics (e.g.
on preemption) are either kept forever or deleted at once. Resume needs the
newest. So the preservation policy is explicit: the union of `LatestN(N)` (the
N newest, whatever their metrics) and, with `keep_best`, `BestN(1)` over the
checkpoints that carry a `top1_error`. `best_fn` is still set because Orbax
writes the `metrics` item only when it is.

Which step `restore()` reads, past unfinished saves and damaged steps, and the
check that a checkpoint belongs to this run, are checkpoint_steps.py's. A save
that fails (no space, no permission) raises `errors.CheckpointWriteError`
naming the step. The log noise Orbax makes on such failures is quieted by
orbax_quiet.py.
"""

from __future__ import annotations

import contextlib
import errno
import logging as std_logging
import os
import shutil
from typing import Any, Mapping, Optional

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from se_flax import config_lib
from se_flax import errors
from se_flax import paths
from se_flax.train import checkpoint_steps
from se_flax.train import orbax_quiet

CHECKPOINT_DIR = 'checkpoints'
BEST_METRIC = 'top1_error'
# Raised by `restore()`; the loop tells another run's checkpoint from damage by it.
CheckpointMismatchError = checkpoint_steps.CheckpointMismatchError


def check_writable(directory: str | os.PathLike) -> list[str]:
  """Creates `directory` and writes a probe file in it, or raises errors.CheckpointWriteError.

  Returns:
    The directories it created, deepest first (local paths only): a run that
    fails before writing anything gives them to `remove_created`. On failure
    they are removed here already.
  """
  path = epath.Path(directory)
  created = [] if paths.is_url(os.fspath(directory)) else _missing(os.fspath(directory))
  probe = path / f'.write_test.{jax.process_index()}.{os.getpid()}'
  try:
    with _unwritable_workdir(path):
      path.mkdir(parents=True, exist_ok=True)
      probe.write_text('ok')
      probe.unlink()
  except errors.CheckpointWriteError:
    remove_created(created)
    raise
  return created


def _missing(directory: str) -> list[str]:
  """`directory` and its ancestors that do not exist yet, deepest first."""
  out, path = [], os.path.abspath(directory)
  while not os.path.exists(path):
    out.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return out


def remove_created(created: list[str]) -> None:
  """Removes the directories `check_writable` created, as far as they are still empty."""
  for directory in created:
    try:
      os.rmdir(directory)
    except OSError as e:
      if e.errno not in (errno.ENOENT, errno.ENAMETOOLONG):  # never made: look further up
        return  # not empty: the run wrote something


@contextlib.contextmanager
def _unwritable_workdir(path: epath.Path):
  try:
    yield
  except OSError as e:
    if e.errno == errno.ENAMETOOLONG:
      raise errors.CheckpointWriteError(
          f'workdir {str(path)!r} cannot be created: a name in it is longer than the file '
          'system allows (usually 255 bytes); pass a --workdir with shorter names') from e
    raise errors.CheckpointWriteError(
        f'workdir {str(path)!r} is not writable ({type(e).__name__}: {e}); '
        'pass a --workdir this process can create files in') from e


def _is_write_failure(e: Exception) -> bool:
  # tensorstore reports file-system errors as ValueError('RESOURCE_EXHAUSTED: ...
  # [os_error_code=28]'); Orbax's own files raise OSError.
  return isinstance(e, OSError) or 'os_error_code' in str(e) or 'RESOURCE_EXHAUSTED' in str(e)


_NO_SPACE = ('No space left on device', "os_error_code='28'", 'os_error_code=28',
             'RESOURCE_EXHAUSTED')


def _write_failure_reason(e: Exception) -> str:
  """The cause of a failed save in a few words, not tensorstore's paragraph."""
  text = str(e)
  if getattr(e, 'errno', None) == errno.ENOSPC or any(m in text for m in _NO_SPACE):
    return 'No space left on device'
  if getattr(e, 'errno', None) in (errno.EACCES, errno.EPERM) or 'Permission denied' in text:
    return 'Permission denied'
  if getattr(e, 'errno', None) == errno.EROFS or 'Read-only file system' in text:
    return 'Read-only file system'
  return text.splitlines()[0][:200] if text.strip() else type(e).__name__


class _SaveFailureNoise(std_logging.Filter):
  """Drops the tracebacks Orbax logs from its save threads when a write fails.

  Each of its threads logs the same failure at ERROR with a traceback (several
  hundred lines for one full disk); the failure itself surfaces at the next
  `save` or `wait_until_finished`, where it becomes the one `error:` line.
  """

  def filter(self, record):
    if record.levelno < std_logging.ERROR or f'{os.sep}orbax{os.sep}' not in record.pathname:
      return True
    text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else '')
    return not ('os_error_code' in text or 'RESOURCE_EXHAUSTED' in text or
                (record.exc_info and isinstance(record.exc_info[1], OSError)))


_save_failure_noise = _SaveFailureNoise()


def _size(path: epath.Path) -> Optional[int]:
  """Bytes under a local directory, or None (an object store, or unreadable)."""
  try:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(os.fspath(path))
        for name in names)
  except OSError:
    return None


def _megabytes(n: int) -> str:
  return f'{n / 2**20:.1f} MB'


def _best_metric(metrics: Optional[Mapping[str, Any]]) -> float:
  value = (metrics or {}).get(BEST_METRIC)
  value = float('inf') if value is None else float(value)
  return float('inf') if np.isnan(value) else value


def _preservation_policy(max_to_keep: int,
                         keep_best: bool) -> ocp.checkpoint_managers.PreservationPolicy:
  """The `max_to_keep` newest checkpoints, and with `keep_best` the best one that has metrics."""
  policies = ocp.checkpoint_managers
  keep = [policies.LatestN(n=max_to_keep)]
  if keep_best:
    keep.append(
        policies.BestN(get_metric_fn=_best_metric, reverse=True, n=1,
                       keep_checkpoints_without_metrics=False))
  return policies.AnyPreservationPolicy(keep)


class TrainCheckpointer:
  """Saves `TrainState`s in `WORKDIR/checkpoints` and restores the newest readable one.

  Every process must construct it and call `save`/`restore` together; Orbax
  writes each process's shards and process 0 the metadata. Read-only (eval,
  analyze): nothing in the directory is created, removed or renamed.
  """

  def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 3, keep_best: bool = True,
               async_save: bool = True, read_only: bool = False):
    self.directory = epath.Path(workdir) / CHECKPOINT_DIR
    self.read_only = read_only
    if not read_only:
      with _unwritable_workdir(epath.Path(workdir)):
        self.directory.mkdir(parents=True, exist_ok=True)
    self.incomplete_steps = checkpoint_steps.unfinished_saves(self.directory)
    if self.incomplete_steps:
      logging.warning(
          'Ignoring unfinished checkpoint(s) for step(s) %s in %s (a save was '
          'interrupted); %s.', self.incomplete_steps, self.directory,
          'left in place' if read_only else 'they are being removed')
    options = ocp.CheckpointManagerOptions(
        best_fn=_best_metric if keep_best else None,
        best_mode='min',
        preservation_policy=_preservation_policy(max_to_keep, keep_best),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=not read_only,
        create=not read_only,
        read_only=read_only,
    )
    registry = ocp.handlers.create_default_handler_registry(state=ocp.StandardCheckpointHandler(),
                                                            config=ocp.JsonCheckpointHandler(),
                                                            loop=ocp.JsonCheckpointHandler())
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          handler_registry=registry)
    if _save_failure_noise not in logging.get_absl_logger().filters:
      logging.get_absl_logger().addFilter(_save_failure_noise)
    self._writing: Optional[int] = None  # the step of a save that may still be in flight
    self._unfinished: Optional[epath.Path] = None  # the directory of a save that failed

  @classmethod
  def from_config(cls, workdir: str | os.PathLike, config: ml_collections.ConfigDict,
                  read_only: bool = False) -> 'TrainCheckpointer':
    return cls(workdir, max_to_keep=config.keep_checkpoints, keep_best=config.keep_best,
               read_only=read_only)

  # Saving.

  def save(self, step: int, state: Any, *, config: Any = None,
           metrics: Optional[Mapping[str, float]] = None,
           loop_state: Optional[Mapping[str, Any]] = None) -> bool:
    """Starts an async save of `state` (and `config` as JSON) as `step`.

    Args:
      step: the step number, normally `int(state.step)`.
      state: the TrainState.
      config: the run config, stored beside the state; a resumed run compares
        it with its own.
      metrics: this state's eval metrics (`top1_error` ranks the best); a
        checkpoint saved without them is kept only while among the newest N.
      loop_state: JSON-serialisable bookkeeping of the training loop that a
        resumed run needs to continue exactly (see `restore_loop_state`).

    Returns:
      False if `step` is not newer than the latest checkpoint (nothing saved).
    """
    items = {'state': ocp.args.StandardSave(state)}
    if config is not None:
      items['config'] = ocp.args.JsonSave(config_lib.as_json(config))
    if loop_state is not None:
      items['loop'] = ocp.args.JsonSave(dict(loop_state))
    if metrics is not None:
      metrics = {k: float(v) for k, v in metrics.items()}
    # A failure of the previous (async) save surfaces here, or this one's.
    with self._reporting_write_errors(int(step)):
      saved = self._manager.save(int(step), args=ocp.args.Composite(**items), metrics=metrics)
    if saved:
      self._writing = int(step)
    return saved

  def wait_until_finished(self) -> None:
    """Blocks until the last save is on disk; raises errors.CheckpointWriteError if it failed."""
    with self._reporting_write_errors():
      self._manager.wait_until_finished()

  @contextlib.contextmanager
  def _reporting_write_errors(self, starting: Optional[int] = None):
    try:
      yield
    except Exception as e:  # pylint: disable=broad-exception-caught
      if not _is_write_failure(e):
        raise
      step = self._writing if self._writing is not None else starting
      self._writing = None
      tmp = self.directory / f'{step}{checkpoint_steps.TMP_MARKER}'
      orbax_quiet.mark_damaged(os.fspath(tmp))
      finished = sorted(s for s in self._manager.all_steps() if s != step)
      reason = _write_failure_reason(e)
      # Removed on close, once Orbax's threads have stopped writing into it.
      self._unfinished = tmp
      space = self._space(finished, reason, tmp)
      raise errors.CheckpointWriteError(
          f'could not write checkpoint step {step} in {self.directory}: {reason}{space}; its '
          f'unfinished {tmp.name} is removed. The finished checkpoints '
          f'{finished[-checkpoint_steps.MAX_LISTED:]} are untouched; free space (or '
          'fix the permissions) and re-run the same command to resume from the newest.') from e

  def _space(self, finished, reason, tmp) -> str:
    """What a save needs and what the disk has left (once `tmp` is gone), for a full local disk."""
    if reason != 'No space left on device' or not os.path.isdir(self.directory):
      return ''
    try:
      free = shutil.disk_usage(self.directory).free + (_size(tmp) or 0)
    except OSError:
      return ''
    needed = _size(self.directory / str(finished[-1])) if finished else None
    return (f' ({_megabytes(free)} free' +
            (f'; a checkpoint takes about {_megabytes(needed)}' if needed else '') + ')')

  def _remove_unfinished(self) -> None:
    """Removes a failed save's temporary directory (process 0; else the next run does)."""
    tmp, self._unfinished = self._unfinished, None
    if tmp is None or self.read_only or jax.process_index() != 0:
      return
    try:
      if tmp.exists():
        tmp.rmtree()
    except OSError as e:
      logging.warning('Could not remove %s (%s); the next run removes it.', tmp, e)

  def close(self) -> None:
    try:
      self._manager.close()
    finally:
      self._remove_unfinished()

  def __enter__(self) -> 'TrainCheckpointer':
    return self

  def __exit__(self, *unused) -> None:
    """Waits for the last save (raising if it failed), then closes."""
    try:
      self.wait_until_finished()
    finally:
      self.close()

  # Reading.

  def all_steps(self) -> list[int]:
    """The finished checkpoints' steps, oldest first (not checked for damage)."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def require_step(self, step: Optional[int]) -> list[int]:
    """All finished steps; raises errors.DataError if `step` (None: any) is not among them."""
    available = self.all_steps()
    if step is not None and step not in available:
      raise errors.DataError(f'no checkpoint for step {step} in {self.directory}; '
                             f'available: {available}')
    return available

  def restore_config(self, step: int) -> dict[str, Any]:
    restored = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return restored['config']

  def restore_loop_state(self, step: int) -> dict[str, Any]:
    """The `loop_state` saved with `step`, or {} for a checkpoint saved without one."""
    if not (self.directory / str(step) / 'loop').exists():
      return {}
    restored = self._manager.restore(step, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))
    return dict(restored['loop'] or {})

  def restore(self, step: Optional[int] = None, target: Any = None) -> Any:
    """Restores a TrainState onto the shardings of `target`.

    Args:
      step: the step to restore; None means the newest readable checkpoint,
        falling back past damaged ones (checkpoint_steps.py).
      target: the abstract state (`state.abstract_train_state(...)`) whose
        shardings say where the arrays go; a checkpoint written on any mesh
        restores onto it.

    Returns:
      The restored TrainState, or None if there are no checkpoints at all.

    Raises:
      CheckpointMismatchError: the checkpoint's tree or shapes differ.
      errors.CheckpointCorruptError: checkpoints exist but none can be read.
      errors.DataError: there is no checkpoint `step`.
    """
    if target is None:
      raise ValueError('restore() needs target=abstract_train_state(...) for the current mesh')
    available = self.require_step(step)
    if not available:
      return None
    restored, state, failures = checkpoint_steps.newest_readable(
        [step] if step is not None else available[::-1], lambda s: self._restore_state(s, target),
        self.directory)
    if restored is not None:
      if checkpoint_steps.report_damage(self.directory, failures, restored,
                                        move_aside=not self.read_only):
        self._manager.reload()  # so that the steps moved aside can be written again
      return state
    if step is not None:
      raise errors.CheckpointCorruptError(
          f'checkpoint step {step} in {self.directory} is unreadable ({failures[0][1]}); '
          f'choose another --step (available: {available}), or leave --step out for the '
          'newest intact one')
    raise errors.CheckpointCorruptError(
        f'no readable checkpoint in {self.directory}; tried steps ' +
        '; '.join(f'{s} ({r[:120]})' for s, r in failures[:3]) +
        (f'; and {len(failures) - 3} more' if len(failures) > 3 else '') +
        '. Move the directory aside to start afresh, or repair it.')

  def _restore_state(self, step: int, target: Any) -> Any:
    """Checks `step`'s stored tree against `target` first, then reads its arrays onto it."""
    metadata = self._manager.item_metadata(step)['state']
    if metadata is None:
      raise FileNotFoundError(f'checkpoint step {step} has no readable state metadata')
    checkpoint_steps.check_structure(getattr(metadata, 'tree', metadata), target, step,
                                     self.directory)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return restored['state']


def stored_config(workdir: str | os.PathLike,
                  step: Optional[int] = None) -> tuple[ml_collections.ConfigDict, int]:
  """(the config stored with checkpoint `step`, or the newest readable one, that step).

  Reads only: nothing in the workdir is created or changed.

  Raises:
    errors.DataError: there is no checkpoint (or no checkpoint `step`).
    errors.CheckpointCorruptError: no checkpoint has a readable config.
  """
  directory = epath.Path(workdir) / CHECKPOINT_DIR
  if not directory.exists():
    raise _no_stored_config(directory)
  checkpointer = TrainCheckpointer(workdir, read_only=True)
  try:
    steps = checkpointer.require_step(step)
    if not steps:
      raise _no_stored_config(directory)
    found, stored, failures = checkpoint_steps.newest_readable(
        [step] if step is not None else steps[::-1], checkpointer.restore_config, directory)
  finally:
    checkpointer.close()
  if found is None:
    tried = '; '.join(f'step {s} ({r[:120]})' for s, r in failures[:3])
    raise errors.CheckpointCorruptError(
        f"no readable config in {directory}: {tried}. Pass --config=FILE with the run's config")
  return _as_config(stored), found


def _no_stored_config(directory: epath.Path) -> errors.DataError:
  return errors.DataError(f'no checkpoint in {directory}, so no stored config: pass '
                          '--config=FILE (and train first)')


def _as_config(tree: Any) -> ml_collections.ConfigDict:
  """A stored (JSON) config as a ConfigDict: JSON lists become the tuples the config held."""

  def tuples(node):
    if isinstance(node, dict):
      return {k: tuples(v) for k, v in node.items()}
    if isinstance(node, list):
      return tuple(tuples(v) for v in node)
    return node

  return ml_collections.ConfigDict(tuples(dict(tree)))
