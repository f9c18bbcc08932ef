"""Metric accumulation, metrics.jsonl (with resume truncation), TensorBoard events, progress lines."""

import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2

from se_flax import errors
from se_flax.train import metrics as metrics_lib
from se_flax.train import parallel
from tests.train.tiny import make_batch
from tests.train.tiny import tiny_setup


def test_accumulator_sums_exactly_and_reduces_once():
  acc = metrics_lib.MetricAccumulator()
  steps = [
      {
          'loss_sum': 20.0,
          'top1_correct': 3.0,
          'top5_correct': 9.0,
          'count': 16.0,
          'grad_norm_sum': 1.0,
          'steps': 1.0,
          'learning_rate': 0.4,
          'finite': 1.0,
          'skipped': 0.0
      },
      {
          'loss_sum': 12.0,
          'top1_correct': 7.0,
          'top5_correct': 14.0,
          'count': 16.0,
          'grad_norm_sum': 3.0,
          'steps': 1.0,
          'learning_rate': 0.3,
          'finite': 1.0,
          'skipped': 0.0
      },
      {
          'loss_sum': 0.0,
          'top1_correct': 0.0,
          'top5_correct': 0.0,
          'count': 0.0,
          'grad_norm_sum': 0.0,
          'steps': 0.0,
          'learning_rate': 0.2,
          'finite': 0.0,
          'skipped': 1.0
      },
  ]
  for s in steps:
    acc.add({k: jnp.float32(v) for k, v in s.items()})
  assert len(acc) == 3
  summary = acc.summary()
  assert len(acc) == 0
  assert summary['loss'] == pytest.approx(32.0 / 32)
  assert summary['top1_error'] == pytest.approx(1 - 10 / 32)
  assert summary['top5_error'] == pytest.approx(1 - 23 / 32)
  assert summary['grad_norm'] == pytest.approx(2.0)
  assert summary['learning_rate'] == pytest.approx(0.2)  # the latest
  assert summary['finite'] == 0.0 and summary['skipped'] == 1.0 and summary['count'] == 32


def test_accumulator_counts_a_large_split_exactly():
  # 50,000 images in batches of 64 with a padded tail: float64 totals stay exact.
  acc = metrics_lib.MetricAccumulator()
  sizes = [64] * (50_000 // 64) + [50_000 % 64]
  for n in sizes:
    acc.add({
        'top1_correct': jnp.float32(n // 2),
        'top5_correct': jnp.float32(n),
        'count': jnp.float32(n),
        'loss_sum': jnp.float32(0.1 * n)
    })
  totals = acc.totals()
  assert totals['count'] == 50_000
  assert totals['top1_correct'] == sum(n // 2 for n in sizes)


def read_events(logdir):
  events = []
  for name in sorted(os.listdir(logdir)):
    with open(os.path.join(logdir, name), 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
      offset += 12 + length + 4
  return events


def _log(writer, steps):
  for step in steps:
    writer.write(step, 'train', {
        'loss': 1.0 / step,
        'learning_rate': 0.1,
        'images_per_sec': 100.0,
        'steps_per_sec': 2.0
    })
    if step % 200 == 0:
      writer.write(step, 'eval', {'top1_error': 0.5 - step / 10_000, 'top5_error': 0.2})


def test_metrics_jsonl_and_tensorboard(tmp_path):
  writer = metrics_lib.MetricWriter(tmp_path, enabled=True)
  _log(writer, [100, 200])
  writer.close()
  records = metrics_lib.read_metrics(tmp_path)
  assert [(r['step'], r['split']) for r in records] == [(100, 'train'), (200, 'train'),
                                                        (200, 'eval')]
  assert records[2] == {'step': 200, 'split': 'eval', 'top1_error': 0.48, 'top5_error': 0.2}
  assert metrics_lib.read_metrics(tmp_path, 'eval') == [records[2]]
  events = read_events(tmp_path / 'tensorboard')
  assert events[0].file_version == 'brain.Event:2'
  scalars = {(e.step, v.tag): v.simple_value for e in events for v in e.summary.value}
  assert scalars[(200, 'eval/top1_error')] == pytest.approx(0.48)
  assert scalars[(100, 'train/loss')] == pytest.approx(0.01)


def test_resumed_run_log_equals_uninterrupted_one(tmp_path):
  whole = tmp_path / 'whole'
  writer = metrics_lib.MetricWriter(whole, enabled=True)
  _log(writer, range(100, 1100, 100))
  writer.close()

  resumed = tmp_path / 'resumed'
  writer = metrics_lib.MetricWriter(resumed, enabled=True)
  _log(writer, range(100, 800, 100))  # killed after logging 700; last checkpoint at 400
  writer.close()
  writer = metrics_lib.MetricWriter(resumed, resume_step=400, enabled=True)
  assert [r['step'] for r in metrics_lib.read_metrics(resumed)][-1] == 400
  _log(writer, range(500, 1100, 100))
  writer.close()
  assert (resumed / 'metrics.jsonl').read_text() == (whole / 'metrics.jsonl').read_text()
  # TensorBoard is told to drop the first run's events after step 400.
  starts = [
      e.step
      for e in read_events(resumed / 'tensorboard')
      if e.session_log.status == event_pb2.SessionLog.START
  ]
  assert starts == [401]


def test_fresh_run_starts_the_log_over_and_other_processes_write_nothing(tmp_path):
  writer = metrics_lib.MetricWriter(tmp_path, enabled=True)
  _log(writer, [100])
  writer.close()
  writer = metrics_lib.MetricWriter(tmp_path, enabled=True)
  writer.close()
  assert metrics_lib.read_metrics(tmp_path) == []
  silent = metrics_lib.MetricWriter(tmp_path / 'other', enabled=False)
  _log(silent, [100])
  silent.close()
  assert not (tmp_path / 'other').exists()


def test_progress_line_and_parameter_overview():
  line = metrics_lib.format_progress(
      1000, 5000, {
          'loss': 2.5,
          'top1_error': 0.6,
          'learning_rate': 0.1,
          'steps_per_sec': 4.0,
          'images_per_sec': 1024.0
      })
  assert line.startswith('step 1000/5000 (20.0%)')
  assert 'loss 2.5000' in line and '4.00 steps/s' in line and '1024 img/s' in line
  assert line.endswith('ETA 0:16:40')  # 4000 steps at 4 steps/s
  overview = metrics_lib.parameter_overview(tiny_setup().state.params)
  assert 'Dense_0/kernel' in overview and '(4, 10)' in overview
  # conv 3*3*3*4+4, BN 4+4, dense 4*10+10
  assert 'Total: 170' in overview.replace(',', '')


def test_torn_last_line_is_dropped_on_resume(tmp_path):
  # A kill or a full disk can leave half a line; resuming must not trip over it.
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 5, "split": "train", "loss": 1.0}\n{"step": 10, "split": "tr')
  writer = metrics_lib.MetricWriter(tmp_path, resume_step=10, enabled=True)
  writer.write(15, 'train', {'loss': 0.5})
  writer.close()
  records = metrics_lib.read_metrics(tmp_path)
  assert [(r['step'], r['loss']) for r in records] == [(5, 1.0), (15, 0.5)]


@pytest.mark.parametrize(
    'damage', ['{"step": 10, "spl', '\x00\x00\x00', '[1, 2]', '7', '{"step": "ten"}', b'\xff\xfe'])
def test_damaged_middle_line_is_set_aside_on_resume(tmp_path, damage):
  # A disk error or an edit can damage any line; logs are not the run's state.
  path = tmp_path / 'metrics.jsonl'
  damage = damage if isinstance(damage, bytes) else damage.encode()
  path.write_bytes(b'{"step": 5, "split": "train", "loss": 1.0}\n' + damage +
                   b'\n{"step": 15, "split": "train", "loss": 0.7}\n'
                   b'{"step": 20, "split": "train", "loss": 0.6}\n')
  writer = metrics_lib.MetricWriter(tmp_path, resume_step=15, enabled=True)
  writer.write(20, 'train', {'loss': 0.5})
  writer.close()
  records = metrics_lib.read_metrics(tmp_path)
  assert [(r['step'], r['loss']) for r in records] == [(5, 1.0), (15, 0.7), (20, 0.5)]
  aside = (tmp_path / 'metrics.jsonl.damaged').read_bytes()
  assert aside.decode('utf-8', 'replace').strip() == damage.decode('utf-8', 'replace')


def test_readers_skip_a_damaged_line_without_writing(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 5, "split": "eval", "loss": 1.0}\n{"st\n'
                  '{"step": 10, "split": "eval", "loss": 0.5}\n')
  assert [r['step'] for r in metrics_lib.read_metrics(tmp_path, 'eval')] == [5, 10]
  assert sorted(p.name for p in tmp_path.iterdir()) == ['metrics.jsonl']


def _run_window(nan_at, steps, nan_policy='stop'):
  """Trains TinyNet `steps` steps, the batch of step `nan_at` holding a NaN; returns the window."""
  setup = tiny_setup(nan_policy=nan_policy)
  window = metrics_lib.TrainWindow({}, batches=None, nan_policy=nan_policy)
  state, watched = setup.state, []
  for step in range(1, steps + 1):
    batch = make_batch(seed=step)
    if step == nan_at:
      batch['image'][0, 0, 0, 0] = np.nan
    state, metrics = setup.train(state, parallel.global_batch(batch, setup.mesh))
    watched.append(_Watched(metrics['finite']))
    window.add(step, {**metrics, 'finite': watched[-1]})
  # No host sync per step: no flag was read while the steps were queued.
  assert [w.reads for w in watched] == [0] * steps
  return window


class _Watched:
  """A device value that counts how often the host reads it."""

  def __init__(self, value):
    self.value, self.reads = value, 0

  def __float__(self):
    self.reads += 1
    return float(self.value)

  def __array__(self, dtype=None, copy=None):
    self.reads += 1
    return np.asarray(self.value, dtype)


def test_train_window_names_the_first_non_finite_step_when_checked():
  window = _run_window(nan_at=3, steps=6)
  with pytest.raises(errors.NonFiniteError, match='at step 3 '):
    window.check_finite()
  window.check_finite()  # the bad interval was reported once; later checks start afresh


def test_train_window_finite_steps_pass_the_check():
  window = _run_window(nan_at=None, steps=3)
  window.check_finite()
  assert window.summary(reset=True)['finite'] == 1.0


def test_train_window_skip_policy_never_raises():
  window = _run_window(nan_at=2, steps=3, nan_policy='skip')
  window.check_finite()
  assert window.summary(reset=True)['skipped'] == 1.0
