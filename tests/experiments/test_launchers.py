"""The print, TPU and SLURM launchers: the commands and scripts they produce."""

import json
import os
import shlex

from experiments import launch_cluster
from experiments import sweep
from tests.experiments import fake_runs

ARGS = ['experiments/position.py', '--dataset=cifar10']


def main(*argv, runner=None, submitter=None):
  out = []
  code = sweep.main(ARGS + list(argv), runner=runner, submitter=submitter, say=out.append)
  return code, out


def test_print_shows_one_main_py_command_per_run(tmp_path):
  root = str(tmp_path / 'pos')
  code, out = main(f'--root={root}', '--launcher=print', '--python=python3')
  assert code == 0
  commands = [shlex.split(line) for line in out if line.startswith('python3 ')]
  assert [c[-1] for c in commands
         ] == [f'--workdir={root}/se_position=last', f'--workdir={root}/se_position=3x3']
  for c in commands:
    assert c[:3] == [
        'python3', 'main.py', '--config=configs/cifar.py:model=se_cifar_resnet56,dataset=cifar10'
    ]
    assert '--config.model.se.bias=False' in c and '--config.label_smoothing=0.1' in c
  assert '--config.model.se.position=3x3' in commands[1]
  assert not os.path.exists(root)


def test_local_dry_run_prints_and_starts_nothing(tmp_path):
  calls = []
  code, out = main(f'--root={tmp_path}/x', '--dry_run', runner=lambda *a: calls.append(a) or 0)
  assert code == 0 and not calls and sum(' main.py ' in line for line in out) == 2


def test_tpu_dry_run_prints_gcloud_ssh_to_every_worker(tmp_path):
  code, out = main('--root=gs://bucket/sweeps/pos', '--launcher=tpu', '--dry_run',
                   '--tpu_name=v4-32', '--zone=us-central2-b', '--repo_dir=~/se_flax',
                   '--project=proj')
  assert code == 0
  commands = [shlex.split(line) for line in out if line.startswith('gcloud ')]
  assert len(commands) == 2
  c = commands[1]
  assert c[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'v4-32']
  assert '--zone=us-central2-b' in c and '--worker=all' in c and '--project=proj' in c
  remote = c[-1]
  assert remote.startswith('--command=cd ~/se_flax && python3 main.py ')
  inner = shlex.split(remote.split('&& ', 1)[1])
  assert inner[-1] == '--workdir=gs://bucket/sweeps/pos/se_position=3x3'
  assert '--config.model.se.position=3x3' in inner


def test_tpu_needs_a_name_and_zone(tmp_path):
  code, out = main(f'--root={tmp_path}', '--launcher=tpu', '--dry_run')
  assert code == 2 and '--tpu_name' in out[-1]


def test_tpu_runs_through_the_local_executor(tmp_path):
  root = str(tmp_path / 'pos')
  seen = []

  def runner(command, cwd, log_path):
    seen.append(command)
    inner = shlex.split(command[-1].split('&& ', 1)[1])
    return fake_runs.FakeMain()(inner, cwd, log_path)

  code, _ = main(f'--root={root}', '--launcher=tpu', '--tpu_name=t', '--zone=z',
                 '--set=num_train_steps=4', runner=runner)
  assert code == 0 and len(seen) == 2 and seen[0][0] == 'gcloud'
  with open(os.path.join(root, 'manifest.json')) as f:
    data = json.load(f)
  assert data['launcher'] == 'tpu'
  assert all(r['status'] == 'done' and r['command'].startswith('gcloud ') for r in data['runs'])


def test_slurm_dry_run_writes_one_script_per_run(tmp_path):
  root = str(tmp_path / 'pos')
  submitted = []
  code, out = main(f'--root={root}', '--launcher=slurm', '--dry_run', '--nodes=2',
                   '--gpus_per_node=4', '--time=12:00:00', '--partition=gpu',
                   '--repo_dir=/shared/se_flax', submitter=submitted.append)
  assert code == 0 and not submitted
  scripts = sorted(os.listdir(os.path.join(root, 'slurm')))
  assert scripts == ['se_position=3x3.sbatch', 'se_position=last.sbatch']
  with open(os.path.join(root, 'slurm', 'se_position=3x3.sbatch')) as f:
    text = f.read()
  lines = text.splitlines()
  assert lines[0] == '#!/bin/bash'
  for directive in ('--nodes=2', '--ntasks-per-node=1', '--gpus-per-node=4', '--time=12:00:00',
                    '--requeue', '--partition=gpu', '--signal=TERM@300',
                    f'--output={root}/se_position=3x3/slurm-%j.out'):
    assert f'#SBATCH {directive}' in lines
  srun = [line for line in lines if line.startswith('srun ')]
  assert len(srun) == 1
  argv = shlex.split(srun[0])
  assert argv[1:3] == ['python3', 'main.py'] and argv[-1] == f'--workdir={root}/se_position=3x3'
  assert 'cd /shared/se_flax' in lines
  assert 'if [ "$rc" -eq 42 ]; then' in lines and '  scontrol requeue "$SLURM_JOB_ID"' in lines
  trap = [i for i, line in enumerate(lines) if line.startswith('trap ')]
  assert trap and trap[0] < lines.index(srun[0]) and lines[trap[0]].endswith(' TERM')
  assert os.path.isdir(os.path.join(root, 'se_position=3x3'))  # SLURM opens --output there
  with open(os.path.join(root, 'manifest.json')) as f:
    assert [r['status'] for r in json.load(f)['runs']] == ['pending', 'pending']


def test_slurm_submits_and_records_job_ids(tmp_path):
  root = str(tmp_path / 'pos')
  ids = iter(['101', '102'])
  code, out = main(f'--root={root}', '--launcher=slurm', submitter=lambda path: (0, next(ids)))
  assert code == 0
  with open(os.path.join(root, 'manifest.json')) as f:
    assert [r.get('job_id') for r in json.load(f)['runs']] == ['101', '102']
  assert 'se_position=3x3: submitted as job 102' in out


def test_slurm_skips_finished_runs(tmp_path):
  root = str(tmp_path / 'pos')
  fake_runs.train(os.path.join(root, 'se_position=last'), total=5)
  code, out = main(f'--root={root}', '--launcher=slurm', '--dry_run', '--set=num_train_steps=5')
  assert code == 0
  assert os.listdir(os.path.join(root, 'slurm')) == ['se_position=3x3.sbatch']


def test_slurm_script_has_optional_lines_only_when_asked():

  class Run:
    name, workdir = 'r', '/w/r'

    def command(self, python):
      return [python, 'main.py', '--workdir=/w/r']

  text = launch_cluster.slurm_script(Run(), launch_cluster.SlurmOptions(repo_dir='/repo'))
  assert '--partition' not in text and '--account' not in text and '--cpus-per-task' not in text
  text = launch_cluster.slurm_script(
      Run(),
      launch_cluster.SlurmOptions(repo_dir='/repo', account='acct', cpus_per_task=16,
                                  tasks_per_node=8, gpus_per_node=8))
  assert '#SBATCH --account=acct' in text and '#SBATCH --cpus-per-task=16' in text
  assert '#SBATCH --ntasks-per-node=8' in text


def test_slurm_script_requeues_when_the_run_is_preempted(tmp_path):
  """Runs the script under bash with stand-ins for srun and scontrol, and preempts it."""
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  # Like srun: passes SIGTERM on to the task and returns the task's exit code.
  (bin_dir / 'srun').write_text('#!/bin/bash\n"$@" &\npid=$!\n'
                                'trap \'kill -TERM $pid 2>/dev/null\' TERM\n'
                                'wait $pid; rc=$?\n'
                                'if [ $rc -gt 128 ]; then wait $pid; rc=$?; fi\n'
                                'exit $rc\n')
  (bin_dir / 'scontrol').write_text(f'#!/bin/bash\necho "$@" > {tmp_path}/scontrol.txt\n')
  for tool in ('srun', 'scontrol'):
    os.chmod(bin_dir / tool, 0o755)
  ready = tmp_path / 'ready'
  # Like the training loop: SIGTERM (from SLURM and again from srun) sets a flag; the loop
  # then saves and exits 42.
  child = ('import signal, sys, time\n'
           'stop = []\n'
           'signal.signal(signal.SIGTERM, lambda *a: stop.append(1))\n'
           f'open({str(ready)!r}, "w").close()\n'
           'for _ in range(600):\n'
           '  if stop:\n'
           '    sys.exit(42)\n'
           '  time.sleep(0.05)\n')

  class Run:
    name, workdir = 'r', str(tmp_path / 'r')

    def command(self, python):
      return [python, '-c', child]

  script = tmp_path / 'r.sbatch'
  script.write_text(
      launch_cluster.slurm_script(
          Run(), launch_cluster.SlurmOptions(repo_dir=str(tmp_path), python=sys.executable)))
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', SLURM_JOB_ID='123')
  proc = subprocess.Popen(['bash', str(script)], env=env, start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 30
  while not ready.exists() and time.time() < deadline:
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGTERM)  # SLURM signals the batch shell and the job step alike
  out, _ = proc.communicate(timeout=30)
  assert proc.returncode == 0, out
  assert (tmp_path / 'scontrol.txt').read_text().strip() == 'requeue 123'
  assert 'requeueing job 123' in out
