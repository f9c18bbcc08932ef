"""Metric accumulation on host, the training window, metrics.jsonl + TensorBoard, progress lines.

Steps return sums and counts (see `step.py`); `MetricAccumulator` adds them in
float64 on the host, fetching from the devices once per log interval, so a
padded evaluation set yields exactly the split's counts. `TrainWindow` is the
loop's bookkeeping between log lines, continued exactly across restarts.

`MetricWriter` writes on process 0 only. TensorBoard events are written with
the `tensorboard` package's record writer and protos, not `tf.summary`: this
package imports TensorFlow nowhere outside `se_flax/data`. clu's metric
writers import it, and do not resume or write to object stores the way
these files must (docs/design.md#metrics-and-evaluation).
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import socket
import time
from typing import Any, Mapping, Optional

from absl import logging
from clu import parameter_overview as clu_overview
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from se_flax import errors
from se_flax import paths

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'

# How each step metric combines over steps; everything else is summed.
_LAST = ('learning_rate',)
_MIN = ('finite',)


class MetricAccumulator:
  """Adds per-step metric dicts (device scalars) and reduces them once on demand."""

  def __init__(self):
    self._pending: list[Mapping[str, Any]] = []

  def add(self, metrics: Mapping[str, Any]) -> None:
    """Queues one step's metrics; no device-to-host transfer happens here."""
    self._pending.append(metrics)

  def __len__(self) -> int:
    return len(self._pending)

  def totals(self, reset: bool = True) -> dict[str, float]:
    """The raw totals: sums, except `learning_rate` (last) and `finite` (min)."""
    fetched = jax.device_get(self._pending)
    if reset:
      self._pending = []
    out: dict[str, float] = {}
    for metrics in fetched:
      for key, value in metrics.items():
        value = float(np.asarray(value, np.float64))
        if key not in out or key in _LAST:
          out[key] = value
        elif key in _MIN:
          out[key] = min(out[key], value)
        else:
          out[key] += value
    return out

  def summary(self, reset: bool = True) -> dict[str, float]:
    """Means and error rates; see `summarize`."""
    return summarize(self.totals(reset=reset))


def summarize(totals: Mapping[str, float]) -> dict[str, float]:
  """Turns totals into `loss`, `top1_error`, `top5_error`, `grad_norm`, ...

  Counts (`count`, `top1_correct`, ...) are passed through so that callers
  can check that an evaluation covered the whole split.
  """
  out = dict(totals)
  count = totals.get('count', 0.0)
  if count > 0:
    if 'loss_sum' in totals:
      out['loss'] = totals['loss_sum'] / count
    for k in ('top1', 'top5'):
      if f'{k}_correct' in totals:
        out[f'{k}_error'] = 1.0 - totals[f'{k}_correct'] / count
  if totals.get('steps', 0.0) > 0 and 'grad_norm_sum' in totals:
    out['grad_norm'] = totals['grad_norm_sum'] / totals['steps']
  for key in ('loss_sum', 'grad_norm_sum'):
    out.pop(key, None)
  return out


class TrainWindow:
  """The training metrics since the last log line, and the undecodable-image count, across restarts.

  Exact resume (docs/design.md#exact-resume): a checkpoint stores `loop_state()`,
  the float64 sums of the window since the last multiple of `log_every_steps`
  and the count of undecodable training images so far. A resumed run starts
  from them, so its next line adds the same numbers in the same order as an
  uninterrupted run's.

  Under nan_policy='stop' every step's `finite` flag stays on the device until
  `check_finite`, which the loop calls before anything reads or saves the
  state (log, evaluation, checkpoint steps): one transfer for the whole
  interval instead of a host sync per step, and the error still names the
  first step whose update was not finite.

  Args:
    loop_state: what `loop_state()` returned when the checkpoint resumed from
      was saved; {} for a fresh run.
    batches: the training batch iterator; its `skipped` counts this process's
      undecodable images.
    nan_policy: config.nan_policy.
  """

  def __init__(self, loop_state: Mapping[str, Any], batches: Any, nan_policy: str):
    self._acc = MetricAccumulator()
    if loop_state.get('metric_window'):
      self._acc.add(loop_state['metric_window'])
    self._batches = batches
    self._stop_on_non_finite = nan_policy == 'stop'
    self._undecodable_before = int(loop_state.get('undecodable_images', 0))
    self._reported = self._undecodable_before
    self._unchecked: list[tuple[int, Mapping[str,
                                             Any]]] = []  # (step, metrics) since the last check

  def add(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Queues a step's metrics; nothing is read from the device here."""
    self._acc.add(metrics)
    if self._stop_on_non_finite:
      self._unchecked.append((step, metrics))

  def check_finite(self) -> None:
    """Raises errors.NonFiniteError naming the first step since the last check whose update
    was not finite (nan_policy='stop')."""
    unchecked, self._unchecked = self._unchecked, []
    if not unchecked:
      return
    flags = np.asarray(jax.device_get([m['finite'] for _, m in unchecked]), np.float64)
    bad = np.flatnonzero(flags < 1.0)
    if bad.size:
      step, metrics = unchecked[int(bad[0])]
      values = {k: float(v) for k, v in jax.device_get(metrics).items()}
      raise errors.NonFiniteError(
          f'non-finite loss or gradients at step {step} (metrics {values}); the update was not '
          'applied and nothing non-finite was checkpointed. Lower config.learning_rate, check '
          "the data, or set config.nan_policy='skip' to skip such updates and count them.")

  def undecodable_images(self) -> int:
    """Training images dropped as undecodable since step 0, over all processes."""
    local = int(getattr(self._batches, 'skipped', 0))
    if jax.process_count() > 1:  # every process calls this at the same steps
      local = int(np.sum(multihost_utils.process_allgather(np.int64(local))))
    return self._undecodable_before + local

  def summary(self, reset: bool) -> dict[str, float]:
    """The window's means (see `summarize`); `reset` starts a new window."""
    values = self._acc.summary(reset=reset)
    values['undecodable_images'] = float(self.undecodable_images())
    return values

  def loop_state(self) -> dict[str, Any]:
    """What a checkpoint stores so that a run resumed from it continues this window."""
    return {
        'metric_window': self._acc.totals(reset=False),
        'undecodable_images': self.undecodable_images()
    }

  def warnings(self, values: Mapping[str, float]) -> list[str]:
    """Warnings for the `summary` values: updates skipped, images newly found undecodable."""
    out = []
    if values.get('skipped'):
      out.append(f'warning: skipped {int(values["skipped"])} update(s) with a non-finite loss or '
                 "gradient in this log interval (config.nan_policy='skip')")
    total = int(values['undecodable_images'])
    new, self._reported = total - self._reported, total
    if new:
      out.append(f'warning: {new} undecodable training image(s) skipped since the last report '
                 f'({total} in all)')
    return out


def _read_lines(path: epath.Path, damaged: Optional[list[str]] = None) -> list[str]:
  """The intact JSON records of `path`, one per line; damaged lines are skipped with one warning.

  A torn last line (power loss, full disk) or a damaged line anywhere (a disk
  error, an edit) is not the run's state: it is reported and left out, and
  collected in `damaged` when given, so that the caller can set it aside.
  """
  if not path.exists():
    return []
  lines, bad = [], []
  text = path.read_bytes().decode('utf-8', errors='replace')
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if isinstance(record, dict) and isinstance(record.get('step', 0), int):
      lines.append(line)
    else:
      bad.append((number, line))
  if bad:
    numbers = ', '.join(str(n) for n, _ in bad[:5]) + (', ...' if len(bad) > 5 else '')
    logging.warning('Skipping %d damaged line(s) of %s (line %s: %r)', len(bad), path, numbers,
                    bad[0][1][:80])
    if damaged is not None:
      damaged.extend(line for _, line in bad)
  return lines


class MetricWriter:
  """Writes WORKDIR/metrics.jsonl and TensorBoard events (process 0 only).

  Each JSON line is `{"step": int, "split": "train"|"eval", <metric>: float}`.

  On a local disk lines are appended and events streamed to one file, flushed
  at every `write`. An object store (a gs:// workdir) cannot append: an
  append rewrites the object or fails, and a streamed object appears only
  when closed. There the writer keeps the run's lines and writes
  metrics.jsonl whole at every `write` (one object write per log line or
  evaluation: a reader sees the previous or the new object, never a torn
  one), and writes each `write`'s events as a part of its own,
  `events.out.tfevents.<start>.<host>.<pid>.<part>`, which TensorBoard reads
  in name order as one stream.

  Args:
    workdir: the run directory, a local path or a URL.
    resume_step: the step a resumed run restarts from. Lines with a larger step
      (written after the checkpoint by the interrupted run) are dropped, and
      TensorBoard is told to discard its events past it, so the resumed run's
      logs equal an uninterrupted run's. None means a fresh run: an existing
      metrics.jsonl is started over.
    enabled: defaults to `jax.process_index() == 0`.
  """

  def __init__(self, workdir: str | os.PathLike, resume_step: Optional[int] = None,
               enabled: Optional[bool] = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = epath.Path(workdir) / METRICS_FILE
    self._object_store = paths.is_url(workdir)
    self._events = None
    self._jsonl = None
    self._lines: list[str] = []
    if not self.enabled:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if resume_step is not None:
      damaged = []
      self._lines = [
          line for line in _read_lines(self.path, damaged)
          if json.loads(line).get('step', 0) <= resume_step
      ]
      if damaged and not self._object_store:
        # Kept for whoever wants to look; the rewrite below leaves them out of the log.
        aside = self.path.parent / (METRICS_FILE + '.damaged')
        with aside.open('a') as f:
          f.write(''.join(line + '\n' for line in damaged))
    if self._object_store:
      self._write_whole()
    else:
      # Rewrite through a temporary file so a kill now cannot lose the kept lines.
      tmp = self.path.parent / (METRICS_FILE + '.tmp')
      tmp.write_text(''.join(line + '\n' for line in self._lines))
      tmp.replace(self.path)
      self._jsonl = self.path.open('a')
    self._open_events(workdir, resume_step)

  def _write_whole(self) -> None:
    self.path.write_text(''.join(line + '\n' for line in self._lines))

  def _open_events(self, workdir, resume_step):
    logdir = epath.Path(workdir) / TENSORBOARD_DIR
    logdir.mkdir(parents=True, exist_ok=True)
    name = f'events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}'
    self._events = (_EventParts(logdir / name) if self._object_store else RecordWriter(
        (logdir / name).open('wb')))
    self._write_event(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))
    if resume_step is not None:
      # TensorBoard drops earlier files' events at steps >= a SessionLog.START's step.
      self._write_event(
          event_pb2.Event(wall_time=time.time(), step=resume_step + 1,
                          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self._events.flush()

  def _write_event(self, event) -> None:
    self._events.write(event.SerializeToString())

  def write(self, step: int, split: str, values: Mapping[str, Any]) -> None:
    """Adds one line and the matching TensorBoard scalars `<split>/<name>`, and writes them."""
    if not self.enabled:
      return
    values = {k: float(np.asarray(v)) for k, v in values.items()}
    line = json.dumps({'step': int(step), 'split': split, **values})
    if self._object_store:
      self._lines.append(line)
      self._write_whole()
    else:
      self._jsonl.write(line + '\n')
      self._jsonl.flush()
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=f'{split}/{k}', simple_value=v) for k, v in values.items()
    ])
    self._write_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))
    self._events.flush()

  def flush(self) -> None:
    if self.enabled and self._events is not None:
      if self._jsonl is not None:
        self._jsonl.flush()
      self._events.flush()

  def close(self) -> None:
    if self.enabled and self._events is not None:
      if self._jsonl is not None:
        self._jsonl.close()
      self._events.close()
      self._jsonl = self._events = None

  def __enter__(self) -> 'MetricWriter':
    return self

  def __exit__(self, *unused) -> None:
    self.close()


class _EventParts:
  """A RecordWriter for object stores: each `flush` writes the records since the last one as
  a new object `<name>.<part>` (zero-padded, so name order is write order)."""

  def __init__(self, path: epath.Path):
    self._path = path
    self._buffer = io.BytesIO()
    self._records = RecordWriter(self._buffer)
    self._part = 0

  def write(self, record: bytes) -> None:
    self._records.write(record)

  def flush(self) -> None:
    data = self._buffer.getvalue()
    if not data:
      return
    (self._path.parent / f'{self._path.name}.{self._part:06d}').write_bytes(data)
    self._part += 1
    self._buffer.seek(0)
    self._buffer.truncate()

  def close(self) -> None:
    self.flush()


def read_metrics(workdir: str | os.PathLike, split: Optional[str] = None) -> list[dict[str, Any]]:
  """The records of WORKDIR/metrics.jsonl, optionally of one split."""
  records = [json.loads(line) for line in _read_lines(epath.Path(workdir) / METRICS_FILE)]
  return [r for r in records if split is None or r.get('split') == split]


def parameter_overview(params: Any, include_stats: bool = False) -> str:
  """A table of parameter names, shapes and sizes, with the total count."""
  return clu_overview.get_parameter_overview(params, include_stats=include_stats)


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds) or seconds < 0:
    return '?'
  return str(datetime.timedelta(seconds=int(round(seconds))))


class Throughput:
  """Steps/s and images/s between successive `update` calls."""

  def __init__(self, step: int, global_batch_size: int):
    self.batch = global_batch_size
    self._step, self._time = step, time.perf_counter()

  def update(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    elapsed = max(now - self._time, 1e-9)
    steps_per_sec = (step - self._step) / elapsed
    self._step, self._time = step, now
    return {'steps_per_sec': steps_per_sec, 'images_per_sec': steps_per_sec * self.batch}


def format_progress(step: int, total_steps: int, values: Mapping[str, float]) -> str:
  """One log line: step, loss, errors, learning rate, throughput and ETA."""
  parts = [f'step {step}/{total_steps} ({100.0 * step / max(total_steps, 1):.1f}%)']
  for key, fmt in (('loss', '{:.4f}'), ('top1_error', '{:.4f}'), ('top5_error', '{:.4f}'),
                   ('learning_rate', '{:.4g}'), ('grad_norm', '{:.3g}')):
    if key in values:
      parts.append(f'{key} ' + fmt.format(values[key]))
  steps_per_sec = values.get('steps_per_sec')
  if steps_per_sec:
    parts.append(f'{steps_per_sec:.2f} steps/s')
    if 'images_per_sec' in values:
      parts.append(f'{values["images_per_sec"]:.0f} img/s')
    parts.append('ETA ' + format_duration((total_steps - step) / steps_per_sec))
  return ' | '.join(parts)
