"""Whole runs on a real object store (the emulator): the README's pod and sweep commands.

train on gs:// -> SIGKILL -> the same command resumes -> eval from the stored
config; the resumed run ends bitwise where the uninterrupted local run ends.
A sweep with its root on gs:// runs, and its report is written there.
"""

import json
import os
import re
import signal
import subprocess
import sys

from etils import epath
import gcsfs

from tests.integration import harness


def _logged(workdir):
  path = epath.Path(workdir) / 'metrics.jsonl'
  try:
    text = path.read_text()
  except FileNotFoundError:
    return []
  return [line for line in text.splitlines() if line.strip()]


def _finished_checkpoints(workdir):
  root = epath.Path(workdir) / 'checkpoints'
  if not root.exists():
    return []
  return sorted(
      int(p.name)
      for p in root.iterdir()
      if p.name.isdigit() and (p / 'commit_success.txt').exists())


def _local_copy(url, destination):
  """The objects under `url`, copied to the local folder `destination`."""
  gcsfs.core.GCSFileSystem(token='anon').get(url.removeprefix('gs://'), str(destination),
                                             recursive=True)
  return destination


def test_train_kill_resume_eval_on_gs(gcs, gcs_env, reference_run, digits_data, jax_cache,
                                      tmp_path):
  workdir = f'{gcs}/se50'
  logs = tmp_path / 'logs'
  logs.mkdir()
  # Fewer checkpoints than the reference run (every object is an emulator request); the cadence
  # changes neither the parameters nor the metric lines, which must still equal the reference's.
  sparse = ('--config.checkpoint_every_steps=10', '--config.keep_checkpoints=2')
  proc = harness.start(workdir, digits_data, *sparse, cache_dir=jax_cache, env_extra=gcs_env,
                       log=logs / 'first')
  try:
    harness.wait_until(lambda: len(_logged(workdir)) >= 2 and _finished_checkpoints(workdir), proc,
                       interval=0.2, what='two log lines and a finished checkpoint')
  finally:
    harness.stop(proc, signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL, 'finished before it could be killed'
  assert not (tmp_path / 'gs:').exists() and not os.path.exists('gs:'), 'a local "gs:" folder'

  code, out, err = harness.run(workdir, digits_data, *sparse, cache_dir=jax_cache,
                               env_extra=gcs_env, log=logs / 'second')
  assert code == 0, harness.describe(code, out, err)
  resumed_from = int(re.search(r'Resuming from checkpoint step (\d+)', out).group(1))
  local = _local_copy(workdir, tmp_path / 'copy')
  harness.assert_same_arrays(harness.checkpoint_arrays(local),
                             harness.checkpoint_arrays(reference_run))
  assert harness.metric_lines(local) == harness.metric_lines(reference_run)
  assert harness.metric_lines(local, after=resumed_from)  # the resumed run wrote lines

  code, out, err = harness.run(workdir, None, '--mode=eval', base=(), env_extra=gcs_env,
                               cache_dir=jax_cache, log=logs / 'eval')
  assert code == 0, harness.describe(code, out, err)
  assert f'checkpoint step {harness.STEPS}' in out


def test_sweep_and_report_with_a_gs_root(gcs, gcs_env, digits_data, jax_cache, tmp_path):
  root = f'{gcs}/sweeps/rr'
  environment = harness.env(devices=1, cache_dir=jax_cache, **gcs_env)
  sweep = subprocess.run([
      sys.executable, '-m', 'experiments.sweep',
      str(harness.REPO / 'experiments/reduction_ratio.py'), '--dataset=digits', f'--root={root}',
      '--only=se_reduction=8', '--set=num_train_steps=4', '--set=schedule.warmup_epochs=0',
      f'--set=dataset.data_dir={digits_data}'
  ], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=400)
  assert sweep.returncode == 0, f'{sweep.stdout[-3000:]}\n{sweep.stderr[-3000:]}'
  run = epath.Path(root) / 'se_reduction=8'
  assert _finished_checkpoints(run) == [4]
  assert [json_line['step'] for json_line in map(json.loads, _logged(run))][-1] == 4
  assert (tmp_path / 'sweep_logs' / 'reduction_ratio' / 'se_reduction=8.log').exists()

  report = subprocess.run([sys.executable, '-m', 'experiments.report', root], cwd=tmp_path,
                          env=environment, capture_output=True, text=True, timeout=300)
  assert report.returncode == 0, report.stderr[-3000:]
  assert f'wrote {root}/report.md' in report.stdout
  text = (epath.Path(root) / 'report.md').read_text()
  assert '| se.reduction=8 | done |' in text, text
  assert not (tmp_path / 'gs:').exists()
