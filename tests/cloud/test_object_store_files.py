"""Workdir files on a real object store (the emulator): the lock, metrics.jsonl, TensorBoard."""

import json
import os
import struct

from etils import epath
import pytest

from se_flax import errors
from se_flax import paths
from se_flax.train import lock as lock_lib
from se_flax.train import metrics as metrics_lib


def test_paths_keep_urls_and_absolutise_local_paths(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('HOME', '/home/someone')
  assert paths.resolve_str('gs://my-bucket/se50') == 'gs://my-bucket/se50'
  assert paths.resolve_str('s3://b/k') == 's3://b/k'
  assert paths.resolve_str('run') == str(tmp_path / 'run')
  assert paths.resolve_str('~/run') == '/home/someone/run'


def test_lock_on_object_store(gcs):
  first = lock_lib.WorkdirLock(gcs).acquire()
  holder = json.loads((epath.Path(gcs) / 'lock').read_text())
  assert holder['pid'] == os.getpid() and holder['heartbeat'] > 0
  with pytest.raises(errors.WorkdirLockedError, match='another training run'):
    lock_lib.WorkdirLock(gcs).acquire()
  first._touch()  # pylint: disable=protected-access
  first.release()
  assert not (epath.Path(gcs) / 'lock').exists()
  lock_lib.WorkdirLock(gcs).acquire().release()


def test_stale_lock_on_object_store_is_taken_over(gcs):
  record = {'host': 'another-host', 'pid': 1, 'token': 'x', 'started': '?', 'heartbeat': 1.0}
  epath.Path(gcs).mkdir(parents=True, exist_ok=True)
  (epath.Path(gcs) / 'lock').write_text(json.dumps(record))
  lock = lock_lib.WorkdirLock(gcs).acquire()
  assert 'took over' in lock.note
  lock.release()


def _records(data: bytes):
  """The records of a TFRecord stream (length, crc, data, crc), by hand."""
  out, at = [], 0
  while at < len(data):
    (length,) = struct.unpack('<Q', data[at:at + 8])
    out.append(data[at + 12:at + 12 + length])
    at += 12 + length + 4
  return out


def test_metrics_on_object_store_resume_and_torn_line(gcs):
  with metrics_lib.MetricWriter(gcs, enabled=True) as writer:
    for step in (4, 8, 12):
      writer.write(step, 'train', {'loss': step / 10})
      # Each line is in the object as soon as it is written: a kill loses nothing logged.
      assert [r['step'] for r in metrics_lib.read_metrics(gcs)][-1] == step
  path = epath.Path(gcs) / 'metrics.jsonl'
  path.write_text(path.read_text() + '{"step": 16, "spl')  # a torn write
  with metrics_lib.MetricWriter(gcs, resume_step=8, enabled=True) as writer:
    assert [r['step'] for r in metrics_lib.read_metrics(gcs)] == [4, 8]
    writer.write(12, 'train', {'loss': 1.25})
  assert [(r['step'], r['loss']) for r in metrics_lib.read_metrics(gcs)] == [(4, 0.4), (8, 0.8),
                                                                             (12, 1.25)]
  parts = sorted(p.name for p in (epath.Path(gcs) / 'tensorboard').iterdir())
  assert len(parts) == (1 + 3) + (1 + 1)  # each writer: its header, then one part per write
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  events = [
      event_pb2.Event.FromString(r)
      for p in parts
      for r in _records((epath.Path(gcs) / 'tensorboard' / p).read_bytes())
  ]
  assert [e.step for e in events if e.HasField('summary')] == [4, 8, 12, 12]
  assert [e.step for e in events if e.HasField('session_log')] == [9]


def test_write_check_on_object_store(gcs):
  from se_flax.train import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoint.check_writable(gcs)
  assert not epath.Path(gcs).exists()  # the probe object is gone again: no object under it
  with pytest.raises(errors.CheckpointWriteError, match='not writable'):
    checkpoint.check_writable('gs://no-such-bucket-here/run')


def test_analysis_outputs_on_object_store(gcs):
  import numpy as np  # pylint: disable=g-import-not-at-top

  from se_flax.analysis import excitation  # pylint: disable=g-import-not-at-top
  from se_flax.analysis import gates as gates_lib  # pylint: disable=g-import-not-at-top
  stats = gates_lib.GateStats(classes=(0, 2))
  rng = np.random.RandomState(3)
  stats.add({
      'layer1_0': rng.rand(12, 4),
      'layer2_0': rng.rand(12, 8)
  }, np.repeat(np.arange(3), 4), np.ones(12))
  out = f'{gcs}/analysis'
  text = excitation.write_outputs(stats, out)
  names = sorted(p.name for p in epath.Path(out).iterdir())
  assert names == ['blocks.csv', 'distribution.png', 'stage0.png', 'stage1.png', 'summary.txt']
  assert (epath.Path(out) / 'summary.txt').read_text() == text + '\n'
  assert (epath.Path(out) / 'stage0.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert len((epath.Path(out) / 'blocks.csv').read_text().strip().splitlines()) == 3


def test_converter_output_on_object_store(gcs):
  import numpy as np  # pylint: disable=g-import-not-at-top

  from se_flax.convert import writer  # pylint: disable=g-import-not-at-top
  variables = {
      'params': {
          'conv1': {
              'kernel': np.arange(6, dtype=np.float32).reshape(2, 3)
          }
      },
      'batch_stats': {
          'bn1': {
              'mean': np.ones(3, np.float32)
          }
      }
  }
  meta = {'model': 'se_resnet50', 'num_classes': 2}
  writer.save_variables(f'{gcs}/weights', variables, meta)
  loaded, loaded_meta = writer.load_variables(f'{gcs}/weights')
  assert loaded_meta == meta
  np.testing.assert_array_equal(loaded['params']['conv1']['kernel'],
                                variables['params']['conv1']['kernel'])
  with pytest.raises(ValueError, match='already holds'):
    writer.save_variables(f'{gcs}/weights', variables, meta)
