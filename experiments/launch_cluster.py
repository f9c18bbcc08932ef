"""TPU pod slices and SLURM clusters: the command or script that starts one run on every host.

Every host runs the same `main.py` command; se_flax initialises
`jax.distributed` from what the environment says (the TPU VM's metadata, or
SLURM's variables under `srun`), so no launcher passes ranks or addresses.
Workdirs must be on storage every host sees (a gs:// bucket on TPU VMs, a
shared file system under SLURM), because every process takes part in
checkpointing.

Preemption: on SIGTERM the training loop saves a checkpoint and exits with
code 42. Under SLURM, `--signal=TERM@<grace>` sends that SIGTERM ahead of the
time limit, and the script requeues the job on 42; the requeued job runs
the same command, which resumes from the checkpoint.
"""

import dataclasses
import os
import shlex
import subprocess
from typing import Callable, Optional

from se_flax import errors

# ---------------------------------------------------------------- TPU VMs


@dataclasses.dataclass
class TPUOptions:
  tpu_name: str
  zone: str
  repo_dir: str = '~/se_flax'  # the checkout on every VM host
  project: Optional[str] = None
  python: str = 'python3'


def tpu_command(run, opts: TPUOptions) -> list:
  """`gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all --command=...` for one run."""
  # A leading ~ must stay unquoted so the remote shell expands it.
  repo = opts.repo_dir
  cd = ('~/' + shlex.quote(repo[2:])) if repo.startswith('~/') else shlex.quote(repo)
  remote = f'cd {cd} && {shlex.join(run.command(opts.python))}'
  command = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', opts.tpu_name, f'--zone={opts.zone}']
  if opts.project:
    command.append(f'--project={opts.project}')
  return command + ['--worker=all', f'--command={remote}']


# ---------------------------------------------------------------- SLURM


@dataclasses.dataclass
class SlurmOptions:
  nodes: int = 1
  tasks_per_node: int = 1  # one process per host, driving all of its GPUs
  gpus_per_node: int = 8
  cpus_per_task: Optional[int] = None
  time: str = '24:00:00'
  partition: Optional[str] = None
  account: Optional[str] = None
  signal_grace_s: int = 300  # SIGTERM this long before the time limit, time to checkpoint
  repo_dir: Optional[str] = None
  python: str = 'python3'


def slurm_script(run, opts: SlurmOptions, sweep: str = '') -> str:
  """An sbatch script whose `srun` starts the run's main.py on every host."""
  repo = opts.repo_dir or os.getcwd()
  out = os.path.join(run.workdir, 'slurm-%j.out')
  lines = [
      '#!/bin/bash',
      f'# se_flax sweep {sweep}: run {run.name}',
      f'#SBATCH --job-name={(sweep + "/" if sweep else "") + run.name}',
      f'#SBATCH --nodes={opts.nodes}',
      f'#SBATCH --ntasks-per-node={opts.tasks_per_node}',
      f'#SBATCH --gpus-per-node={opts.gpus_per_node}',
  ]
  if opts.cpus_per_task:
    lines.append(f'#SBATCH --cpus-per-task={opts.cpus_per_task}')
  lines += [
      f'#SBATCH --time={opts.time}',
      '#SBATCH --requeue',
      f'#SBATCH --signal=TERM@{opts.signal_grace_s}',
      '#SBATCH --open-mode=append',
      f'#SBATCH --output={out}',
      f'#SBATCH --error={out}',
  ]
  if opts.partition:
    lines.append(f'#SBATCH --partition={opts.partition}')
  if opts.account:
    lines.append(f'#SBATCH --account={opts.account}')
  lines += [
      '',
      f'cd {shlex.quote(repo)}',
      '# On preemption SLURM signals this shell too: a trap (not an ignore, which srun would',
      '# inherit) keeps it alive until srun returns, so the requeue below still runs.',
      'trap \'echo "SIGTERM: waiting for the run to save its checkpoint"\' TERM',
      '# Tasks find each other through SLURM_* (jax.distributed); a lost peer fails the',
      '# others after its heartbeat timeout, and srun returns the largest exit code.',
      f'srun {shlex.join(run.command(opts.python))}',
      'rc=$?',
      f'if [ "$rc" -eq {errors.EXIT_PREEMPTED} ]; then',
      '  # The loop checkpointed on SIGTERM (time limit or preemption): queue the job again.',
      '  echo "run preempted at $(date); requeueing job $SLURM_JOB_ID"',
      '  scontrol requeue "$SLURM_JOB_ID"',
      '  exit 0',
      'fi',
      'exit "$rc"',
      '',
  ]
  return '\n'.join(lines)


def write_slurm_scripts(runs, root: str, opts: SlurmOptions, sweep: str = '') -> dict:
  """Writes ROOT/slurm/<run>.sbatch for each run (and the run's workdir, for its logs)."""
  directory = os.path.join(root, 'slurm')
  os.makedirs(directory, exist_ok=True)
  paths = {}
  for run in runs:
    os.makedirs(run.workdir, exist_ok=True)  # SLURM opens --output before the job starts
    path = os.path.join(directory, f'{run.name}.sbatch')
    with open(path, 'w') as f:
      f.write(slurm_script(run, opts, sweep))
    os.chmod(path, 0o755)
    paths[run.name] = path
  return paths


def sbatch(path: str) -> tuple:
  """Submits a script; returns (exit code, job id or error text)."""
  proc = subprocess.run(['sbatch', '--parsable', path], capture_output=True, text=True, check=False)
  text = proc.stdout.strip() if proc.returncode == 0 else proc.stderr.strip()
  return proc.returncode, text.split(';')[0]


def submit(paths: dict, manifest, submitter: Callable[[str], tuple] = sbatch,
           say: Callable[[str], None] = print) -> dict:
  """Submits each script; records the job id in the manifest. Returns {name: job id or None}."""
  jobs = {}
  for name, path in paths.items():
    code, text = submitter(path)
    if code == 0:
      manifest.update(name, job_id=text)
      say(f'{name}: submitted as job {text}')
      jobs[name] = text
    else:
      manifest.update(name, status='failed', exit_code=code)
      say(f'{name}: sbatch failed ({text})')
      jobs[name] = None
  return jobs
