"""Runs a sweep file: every run's config is built and validated before the first run starts.

  python -m experiments.sweep experiments/reduction_ratio.py --root=DIR --dataset=digits
  python -m experiments.sweep experiments/squeeze.py --root=DIR --dataset=cifar10 --launcher=print
  python -m experiments.sweep experiments/stages.py --root=gs://B/stages --launcher=tpu \\
      --tpu_name=v4-32 --zone=us-central2-b --repo_dir=~/se_flax --dry_run
  python -m experiments.sweep experiments/integration.py --root=/shared/x --launcher=slurm \\
      --nodes=2 --gpus_per_node=8 --time=48:00:00

Launchers: `local` runs main.py subprocesses here (N at a time with
--parallel), skipping finished runs and resuming interrupted ones; `print`
prints each run's command; `tpu` runs each on a TPU VM slice through
`gcloud ... ssh --worker=all`; `slurm` writes one sbatch script per run and
submits it. With --dry_run, `tpu` prints its commands and `slurm` only writes
its scripts. Each run's workdir is ROOT/<run name>; ROOT/manifest.json
records the plan and each run's status. `python -m experiments.report ROOT`
then writes the tables and plots.

Every `--set` is checked with the runs' configs by main.py's upfront check; a
`--set` of a field the sweep varies is refused. A failure prints one `error:`
line; the exit codes are docs/failures.md's ("The sweep and report tools"):
0 every selected run done, 1 a run failed, 2 a command line, sweep file, --set
or --root that cannot work, 5 a --root that cannot be written, 42 runs stopped
by SIGTERM (re-run to resume), 130 stopped by Ctrl-C (re-run to resume).
"""

import argparse
import ast
import os
import shlex
import sys
import time

from etils import epath

from experiments import launch_cluster
from experiments import launch_local
from experiments import manifest as manifest_lib
from experiments import runs as runs_lib
from experiments import targets
from se_flax import errors
from se_flax import paths
from se_flax import runtime

LAUNCHERS = ('local', 'print', 'tpu', 'slurm')


class _Parser(argparse.ArgumentParser):
  """argparse with the one `error:` line of every se_flax command, exit 2."""

  def error(self, message):
    print(f'error: {message} (see python -m experiments.sweep --help)', file=sys.stderr, flush=True)
    sys.exit(errors.EXIT_CONFIG_ERROR)


def parse_args(argv):
  p = _Parser(prog='python -m experiments.sweep', description=__doc__.split('\n')[0])
  p.add_argument('sweep_file', help='a sweep file, e.g. experiments/reduction_ratio.py')
  p.add_argument('--root', required=True,
                 help='sweep directory: ROOT/<run>/ and ROOT/manifest.json')
  p.add_argument('--dataset', default='imagenet', choices=sorted(targets.TARGETS))
  p.add_argument('--model', default=None, help="SE model to run instead of the data set's default")
  p.add_argument('--launcher', default='local', choices=LAUNCHERS)
  p.add_argument('--parallel', type=int, default=1, help='local: runs at a time')
  p.add_argument('--dry_run', action='store_true',
                 help='tpu: print commands; slurm: only write scripts')
  p.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                 help='override for every run, e.g. --set=num_epochs=2 (repeatable)')
  p.add_argument('--only', action='append', default=[], metavar='RUN', help='run only these runs')
  p.add_argument('--python', default=None,
                 help='interpreter of the runs (default: this one locally, python3 remotely)')
  p.add_argument('--max_restarts', type=int, default=2,
                 help='restarts of a run preempted (exit 42)')
  tpu = p.add_argument_group('tpu')
  tpu.add_argument('--tpu_name')
  tpu.add_argument('--zone')
  tpu.add_argument('--project')
  tpu.add_argument('--repo_dir', default=None, help='the se_flax checkout on the VMs / cluster')
  slurm = p.add_argument_group('slurm')
  slurm.add_argument('--nodes', type=int, default=1)
  slurm.add_argument('--tasks_per_node', type=int, default=1)
  slurm.add_argument('--gpus_per_node', type=int, default=8)
  slurm.add_argument('--cpus_per_task', type=int, default=None)
  slurm.add_argument('--time', default='24:00:00')
  slurm.add_argument('--partition')
  slurm.add_argument('--account')
  return p.parse_args(argv)


def parse_set(items):
  """'field=value' strings -> {field: value}; values are Python literals or plain strings."""
  out = {}
  for item in items:
    if '=' not in item:
      raise runs_lib.SweepError(f'--set={item!r} is not FIELD=VALUE')
    key, text = item.split('=', 1)
    try:
      out[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      out[key] = text
  return out


def describe(plan) -> str:
  lines = [
      f'sweep {plan.sweep} ({plan.sweep_file}) on {plan.target}: {plan.about}',
      f'{len(plan.runs)} runs' +
      (f', {len(plan.dropped)} not applicable here' if plan.dropped else '')
  ]
  for run in plan.runs:
    steps = f'{run.total_steps} steps' if run.total_steps else 'steps unknown'
    notes = f'  [{"; ".join(run.notes)}]' if run.notes else ''
    lines.append(f'  {run.name:<40} {steps}{notes}')
  for d in plan.dropped:
    lines.append(f'  not run: {runs_lib.label(d.overrides)}: {d.reason}')
  return '\n'.join(lines)


def _say_error(message):
  print(message, file=sys.stderr, flush=True)


class _RootError(Exception):
  """A --root that cannot hold the sweep; `exit_code` says: fix the command, or the disk."""

  def __init__(self, message, exit_code):
    super().__init__(message)
    self.exit_code = exit_code


def _check_numbers(args):
  """The numeric options' domains (argparse checks only that they are integers)."""
  lows = {
      'parallel': 1,
      'max_restarts': 0,
      'nodes': 1,
      'tasks_per_node': 1,
      'gpus_per_node': 0,
      'cpus_per_task': 1
  }
  for name, low in lows.items():
    value = getattr(args, name)
    if value is not None and value < low:
      raise runs_lib.SweepError(f'--{name}={value} must be an integer >= {low}')


def _check_root(root):
  """A local --root must be a directory (or absent) this user can write: checked before planning."""
  if paths.is_url(root):
    return
  path = os.path.abspath(root)
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise _RootError(f'--root={root}: {existing} is a file, not a directory; give a directory',
                     errors.EXIT_CONFIG_ERROR)
  if not os.access(existing, os.W_OK | os.X_OK):
    raise _RootError(
        f'--root={root}: {existing} is not writable by this user; give a directory '
        'you can write, or change its permissions', errors.EXIT_WRITE_ERROR)


def main(argv=None, runner=None, submitter=None, say=print, say_error=None) -> int:
  """The command line; `runner`/`submitter` replace subprocess and sbatch (tests).

  Errors go to stderr, or to `say_error`; a caller that replaces `say` alone gets them there.
  """
  say_error = say_error or (_say_error if say is print else say)
  try:
    return _main(argv, runner, submitter, say, say_error)
  except runs_lib.SweepError as e:
    say_error(f'error: {e}')
    return errors.EXIT_CONFIG_ERROR
  except _RootError as e:
    say_error(f'error: {e}')
    return e.exit_code
  except OSError as e:
    # The manifest, a log or a script could not be written (permissions, disk full).
    where = f' {e.filename}' if e.filename else ''
    say_error(f'error: cannot write{where}: {e.strerror or e}; free space or fix the permissions, '
              'then re-run the same command')
    return errors.EXIT_WRITE_ERROR
  except KeyboardInterrupt:
    say_error('error: interrupted before any run started; nothing was changed')
    return errors.EXIT_INTERRUPTED


def _main(argv, runner, submitter, say, say_error) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  root = paths.resolve_str(args.root)  # gs://... stays a URL
  if args.launcher == 'tpu' and not (args.tpu_name and args.zone):
    say_error('error: --launcher=tpu needs --tpu_name and --zone')
    return errors.EXIT_CONFIG_ERROR
  _check_numbers(args)
  writes = not (args.launcher == 'print' or (args.dry_run and args.launcher in ('local', 'tpu')))
  if writes:
    _check_root(root)
  plan = runs_lib.plan(args.sweep_file, root, args.dataset, args.model, parse_set(args.set))
  unknown = sorted(set(args.only) - {r.name for r in plan.runs})
  if unknown:
    say_error(f'error: --only names unknown runs {unknown}; runs: {[r.name for r in plan.runs]}')
    return errors.EXIT_CONFIG_ERROR
  # The manifest keeps every run of the plan; --only narrows what is started now.
  selected = [r for r in plan.runs if not args.only or r.name in args.only]
  listing = args.launcher == 'print' or (args.dry_run and args.launcher in ('local', 'tpu'))
  # When only commands are printed, the run list goes out as shell comments: the output runs as is.
  say('\n'.join(('# ' if listing else '') + line for line in describe(plan).splitlines()))

  local_python = args.python or sys.executable
  if args.launcher == 'print' or (args.launcher == 'local' and args.dry_run):
    say(f'cd {shlex.quote(runs_lib.REPO_ROOT)}')  # config paths are relative to the checkout
    for run in selected:
      say(shlex.join(run.command(local_python)))
    return 0

  if args.launcher == 'tpu':
    opts = launch_cluster.TPUOptions(args.tpu_name, args.zone, args.repo_dir or '~/se_flax',
                                     args.project, args.python or 'python3')
    commands = {r.name: launch_cluster.tpu_command(r, opts) for r in plan.runs}
    if args.dry_run:
      for run in selected:
        say(shlex.join(commands[run.name]))
      return 0
    if not paths.is_url(root):
      say_error(f'warning: {root} is not shared storage; on a multi-host slice give '
                '--root=gs://...')
    log_dir = _local_log_dir(root, plan)
    return _execute(plan, selected, root, 'tpu', opts.python, commands, 1, runner,
                    args.max_restarts, say, log_dir, say_error)

  if args.launcher == 'slurm':
    opts = launch_cluster.SlurmOptions(nodes=args.nodes, tasks_per_node=args.tasks_per_node,
                                       gpus_per_node=args.gpus_per_node,
                                       cpus_per_task=args.cpus_per_task, time=args.time,
                                       partition=args.partition, account=args.account,
                                       repo_dir=args.repo_dir or runs_lib.REPO_ROOT,
                                       python=args.python or 'python3')
    manifest = _manifest(root, say_error)
    try:
      manifest.start(plan, 'slurm', opts.python,
                     {r.name: shlex.join(r.command(opts.python)) for r in plan.runs})
    except manifest_lib.ConfigChangedError as e:
      say_error(f'error: {e}')
      return errors.EXIT_CONFIG_ERROR
    finished = [r for r in selected if runs_lib.is_finished(r.workdir, r.total_steps)]
    for run in finished:
      manifest.update(run.name, status='done', exit_code=0)
    todo = [r for r in selected if r.name not in {f.name for f in finished}]
    scripts = launch_cluster.write_slurm_scripts(todo, root, opts, plan.sweep)
    say(f'wrote {len(scripts)} sbatch scripts to {epath.Path(root) / "slurm"}' +
        (f' ({len(finished)} runs finished before)' if finished else ''))
    if args.dry_run:
      for path in scripts.values():
        say(f'  sbatch {path}')
      return 0
    jobs = launch_cluster.submit(scripts, manifest, **({
        'submitter': submitter
    } if submitter else {}), say=say)
    return 0 if all(jobs.values()) else 1

  commands = {r.name: r.command(local_python) for r in plan.runs}
  return _execute(plan, selected, root, 'local', local_python, commands, args.parallel, runner,
                  args.max_restarts, say, _local_log_dir(root, plan), say_error)


def _manifest(root, say_error):
  manifest = manifest_lib.Manifest(root)
  if manifest.set_aside:
    say_error(f'warning: {manifest.path} was damaged; set aside as {manifest.set_aside}, and '
              "rebuilt from the runs' workdirs")
  return manifest


def _local_log_dir(root, plan):
  """Where the runs' logs go: in each workdir, or ./sweep_logs/<sweep> when the root is a URL
  (a subprocess's output needs a local file)."""
  return os.path.join(os.getcwd(), 'sweep_logs', plan.sweep) if paths.is_url(root) else None


def _execute(plan, selected, root, launcher, python, commands, parallel, runner, max_restarts, say,
             log_dir=None, say_error=print) -> int:
  manifest = _manifest(root, say_error)
  try:
    manifest.start(plan, launcher, python, {n: shlex.join(c) for n, c in commands.items()}, parallel)
  except manifest_lib.ConfigChangedError as e:
    say_error(f'error: {e}')
    return errors.EXIT_CONFIG_ERROR
  t0 = time.time()
  statuses = launch_local.execute(manifest, {r.name: commands[r.name] for r in selected},
                                  parallel=parallel, runner=runner, max_restarts=max_restarts,
                                  say=say, log_dir=log_dir)
  counts = {s: sum(v == s for v in statuses.values()) for s in manifest_lib.STATUSES}
  minutes, seconds = divmod(int(round(time.time() - t0)), 60)
  stopped = f', {counts["interrupted"]} interrupted' if counts['interrupted'] else ''
  say(f'sweep {plan.sweep}: {counts["done"]} done, {counts["failed"]} failed{stopped}, '
      f'{counts["pending"]} pending, in {minutes} min {seconds} s; '
      f'report: python -m experiments.report {root}')
  if launch_local.interrupted():
    say_error('error: interrupted (Ctrl-C); the runs stopped saved a checkpoint: re-run the same '
              'command to resume them')
    return errors.EXIT_INTERRUPTED
  if counts['pending']:
    return errors.EXIT_PREEMPTED
  return 1 if counts['failed'] else 0


if __name__ == '__main__':
  runtime.setup()
  sys.exit(main())
