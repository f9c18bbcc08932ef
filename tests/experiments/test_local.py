"""The local launcher: manifest, skipping finished runs, resuming interrupted ones, parallel runs."""

import json
import os
import signal
import sys
import threading
import time

from experiments import launch_local
from experiments import manifest as manifest_lib
from experiments import sweep
from tests.experiments import fake_runs

# Six steps per run keep the fake runs short; the sweep does not care.
ARGS = ['experiments/reduction_ratio.py', '--dataset=digits', '--set=num_train_steps=6']


def run_sweep(root, runner, *extra):
  out = []
  code = sweep.main(ARGS + [f'--root={root}', *extra], runner=runner, say=out.append)
  return code, out


def load_manifest(root):
  with open(os.path.join(root, 'manifest.json')) as f:
    return json.load(f)


def test_runs_every_run_and_records_it(tmp_path):
  root = str(tmp_path / 'rr')
  fake = fake_runs.FakeMain()
  code, out = run_sweep(root, fake)
  assert code == 0
  names = [
      'model=cifar_resnet20', 'se_reduction=2', 'se_reduction=4', 'se_reduction=8',
      'se_reduction=16'
  ]
  assert fake.calls == [(n, 0) for n in names]
  data = load_manifest(root)
  assert data['sweep'] == 'reduction_ratio' and data['dataset'] == 'digits'
  assert data['tables'] == ['Table 10'] and data['axis'] == 'model.se.reduction'
  assert [r['name'] for r in data['runs']] == names
  for entry in data['runs']:
    assert entry['status'] == 'done' and entry['exit_code'] == 0 and entry['attempts'] == 1
    assert entry['started'] and entry['finished'] and entry['total_steps'] == 6
    assert entry['workdir'] == os.path.join(root, entry['name'])
    assert entry['command'].split()[1] == 'main.py'
    assert f'--workdir={entry["workdir"]}' in entry['command']
    assert entry['config']['num_train_steps'] == 6
  assert data['runs'][2]['config']['model']['se']['reduction'] == 4
  assert data['runs'][0]['overrides'] == {'model.name': 'resnet50'}
  assert data['runs'][0]['applied'] == {'model.name': 'cifar_resnet20'}
  assert data['dropped'][0]['overrides'] == {'model.se.reduction': 32}
  assert 'sweep reduction_ratio: 5 done, 0 failed' in out[-1]


def test_rerun_skips_finished_runs(tmp_path):
  root = str(tmp_path / 'rr')
  run_sweep(root, fake_runs.FakeMain())
  again = fake_runs.FakeMain()
  code, out = run_sweep(root, again)
  assert code == 0 and again.calls == []
  assert sum('finished before, skipped' in line for line in out) == 5


def test_crash_then_rerun_resumes_from_the_checkpoint(tmp_path):
  root = str(tmp_path / 'rr')
  fake = fake_runs.FakeMain(crash_at={'se_reduction=4': 4})
  code, out = run_sweep(root, fake)
  assert code == 1
  entry = {r['name']: r for r in load_manifest(root)['runs']}['se_reduction=4']
  assert entry['status'] == 'failed' and entry['exit_code'] == 1
  assert any('se_reduction=4: FAILED (exit code 1)' in line for line in out)

  again = fake_runs.FakeMain()
  code, out = run_sweep(root, again)
  assert code == 0
  assert again.calls == [('se_reduction=4', 4)]  # only the crashed run, from its checkpoint
  assert any('se_reduction=4: resuming from step 4' in line for line in out)
  entry = {r['name']: r for r in load_manifest(root)['runs']}['se_reduction=4']
  assert entry['status'] == 'done' and entry['attempts'] == 2
  records = fake_runs.read_records(os.path.join(root, 'se_reduction=4'))
  assert [r['step'] for r in records if r['split'] == 'eval'] == [2, 4, 6]


def test_interrupted_sweep_leaves_running_status_and_resumes(tmp_path):
  root = str(tmp_path / 'rr')
  run_sweep(root, fake_runs.FakeMain())
  # A sweep killed mid-run: the manifest says running, the run has a checkpoint at step 2.
  data = load_manifest(root)
  data['runs'][1]['status'] = 'running'
  with open(os.path.join(root, 'manifest.json'), 'w') as f:
    json.dump(data, f)
  workdir = os.path.join(root, 'se_reduction=2')
  for step in ('4', '6'):
    os.rename(os.path.join(workdir, 'checkpoints', step), os.path.join(workdir, f'gone{step}'))
  again = fake_runs.FakeMain()
  assert run_sweep(root, again)[0] == 0
  assert again.calls == [('se_reduction=2', 2)]


def test_a_finished_run_needs_its_last_checkpoint(tmp_path):
  root = str(tmp_path / 'rr')
  run_sweep(root, fake_runs.FakeMain())
  os.rename(os.path.join(root, 'se_reduction=8', 'checkpoints', '6'),
            os.path.join(root, 'se_reduction=8', 'lost'))
  again = fake_runs.FakeMain()
  run_sweep(root, again)
  assert again.calls == [('se_reduction=8', 4)]


def test_preempted_run_is_restarted(tmp_path):
  root = str(tmp_path / 'rr')
  fake = fake_runs.FakeMain(preempt_at={'se_reduction=8': 2})
  code, out = run_sweep(root, fake)
  assert code == 0
  assert [c for c in fake.calls if c[0] == 'se_reduction=8'] == [('se_reduction=8', 0),
                                                                 ('se_reduction=8', 2)]
  assert any('preempted (exit 42)' in line for line in out)


def test_parallel_runs_all_and_keeps_manifest_order(tmp_path):
  root = str(tmp_path / 'rr')
  fake = fake_runs.FakeMain()
  code, _ = run_sweep(root, fake, '--parallel=3')
  assert code == 0 and len(fake.calls) == 5
  assert all(r['status'] == 'done' for r in load_manifest(root)['runs'])


def test_only_runs_a_subset_but_records_all(tmp_path):
  root = str(tmp_path / 'rr')
  fake = fake_runs.FakeMain()
  code, _ = run_sweep(root, fake, '--only=se_reduction=8')
  assert code == 0 and fake.calls == [('se_reduction=8', 0)]
  statuses = {r['name']: r['status'] for r in load_manifest(root)['runs']}
  assert statuses['se_reduction=8'] == 'done' and statuses['se_reduction=2'] == 'pending'


def test_changed_config_in_the_same_root_is_refused(tmp_path):
  root = str(tmp_path / 'rr')
  run_sweep(root, fake_runs.FakeMain())
  out = []
  code = sweep.main([
      'experiments/reduction_ratio.py', '--dataset=digits', f'--root={root}',
      '--set=num_train_steps=8'
  ], runner=fake_runs.FakeMain(), say=out.append)
  assert code == 2
  assert 'started with another config' in out[-1] and 'num_train_steps: 6 -> 8' in out[-1]


def test_manifest_rejects_unknown_status(tmp_path):
  m = manifest_lib.Manifest(str(tmp_path))
  m.data = {'runs': [{'name': 'a'}]}
  try:
    m.update('a', status='exploded')
  except ValueError as e:
    assert 'exploded' in str(e)
  else:
    raise AssertionError('expected a ValueError')


def test_sigterm_to_the_sweep_reaches_the_runs_and_leaves_them_resumable(tmp_path):
  # A child that, like the training loop, exits 42 on SIGTERM.
  child = ('import signal, sys, time\n'
           'signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n'
           'print("ready", flush=True)\n'
           'time.sleep(60)\n')
  workdir = str(tmp_path / 'x')
  m = manifest_lib.Manifest(str(tmp_path))
  m.data = {'runs': [{'name': 'x', 'workdir': workdir, 'total_steps': 5, 'status': 'pending'}]}
  log = os.path.join(workdir, 'train.log')

  def stop_when_ready():
    deadline = time.time() + 30
    while time.time() < deadline:
      if os.path.exists(log) and '\nready\n' in open(log).read():
        os.kill(os.getpid(), signal.SIGTERM)
        return
      time.sleep(0.05)

  threading.Thread(target=stop_when_ready, daemon=True).start()
  out = []
  statuses = launch_local.execute(m, {'x': [sys.executable, '-c', child]}, say=out.append)
  assert statuses == {'x': 'pending'}
  assert m.run('x')['status'] == 'pending' and m.run('x')['exit_code'] == 42
  assert any('stopped by SIGTERM' in line for line in out)
  assert signal.getsignal(signal.SIGTERM) is not launch_local._CHILDREN.terminate
