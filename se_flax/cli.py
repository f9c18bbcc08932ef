"""The modes of main.py and the rules between its flags; each expected failure one line and a code.

main.py parses the flags (se_flax/flags.py) and calls `run`. Every expected
failure is an `errors.SEFlaxError` that carries its exit code
(se_flax/errors.py; docs/failures.md lists them for users).
"""

import errno
import os
import signal
import sys

from se_flax import config_lib
from se_flax import errors
from se_flax import paths

# --mode: what each mode does (main.py's --help).
MODES = {
    'train': 'train (and resume)',
    'eval': 'evaluate a checkpoint',
    'summary': 'parameters, GMACs and a per-stage table',
    'analyze': 'excitation statistics of a trained model',
    'compile': 'compile the train and eval steps for a TPU slice (--topology) on this host: '
               'HBM, FLOPs, modelled step time, collectives',
}
# Without --config these use the config stored with the checkpoint.
STORED_CONFIG_MODES = ('eval', 'analyze')


def fail(message, code: int) -> int:
  """Prints `message` as the one `error:` line on stderr; returns `code`."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  return code


class _Terminated(BaseException):
  """SIGTERM to a mode that saves nothing (eval, analyze): it stops where it is, with a line.

  A BaseException, like KeyboardInterrupt, so that no `except Exception` on the
  way up takes it for a failure of what it interrupted.
  """


def _on_terminate(signum, frame):  # pylint: disable=unused-argument
  raise _Terminated()


def _check_command(mode, config, workdir, topology=None):
  """What --mode needs of the other flags; before anything heavy is imported."""
  if mode not in MODES:
    raise errors.ConfigError(f'--mode={mode} is unknown; choose one of {list(MODES)}')
  if topology is not None and mode != 'compile':
    raise errors.ConfigError(f'--topology={topology} is for --mode=compile (the TPU slice to '
                             f'compile for); --mode={mode} does not read it: leave it out')
  if config is None and mode not in STORED_CONFIG_MODES:
    raise errors.ConfigError(f'--config is required for --mode={mode}, '
                             'e.g. --config=configs/digits.py')
  if not workdir and mode != 'summary':
    raise errors.ConfigError(f'--workdir is required for --mode={mode}')


def _check_step_and_processes(mode, step, coordinator_address, num_processes, process_id,
                              environment):
  """--step and the process flags; `environment`: the scheduler that launched several, or None."""
  if step is not None and mode not in STORED_CONFIG_MODES:
    raise errors.ConfigError(
        f'--step={step} is for --mode={"/".join(STORED_CONFIG_MODES)} (the checkpoint to read); '
        f'--mode={mode} does not read it (training resumes from the newest checkpoint): '
        'leave --step out')
  if num_processes is not None and num_processes < 1:
    raise errors.ConfigError(f'--num_processes={num_processes}: it takes a count of 1 or more')
  if process_id is not None and (process_id < 0 or
                                 (num_processes is not None and process_id >= num_processes)):
    top = f' (0 to {num_processes - 1} for --num_processes={num_processes})' if num_processes else ''
    raise errors.ConfigError(f'--process_id={process_id} is out of range{top}: each process takes '
                             'its own index, from 0')
  several = (num_processes or 1) > 1 or (process_id or 0) > 0
  if several and not coordinator_address and environment is None:
    raise errors.ConfigError(
        '--num_processes and --process_id need --coordinator_address=HOST:PORT of process 0 '
        '(or a scheduler that jax detects, such as SLURM); without one this would train as '
        'a single process')


def _dispatch(mode, config, workdir, step, topology=None, stored=None, search_batch=True):
  # pylint: disable=g-import-not-at-top  (TensorFlow comes with these: only after the check)
  if mode == 'compile':
    from se_flax.train import aot
    return aot.run(config, workdir, topology, search_batch)
  if mode == 'analyze':
    from se_flax.analysis import excitation
    return excitation.run(config, workdir, step, stored)
  from se_flax.train import loop
  if mode == 'train':
    return loop.train_and_evaluate(config, workdir)
  return loop.evaluate_checkpoint(config, workdir, step, stored)


def _check_field_names(config, defaults):
  """The config's structure is locked to configs/default.py's fields.

  A field se_flax does not declare is one it would never read: a typo
  (`c.batch_szie = 64` in a user's file), or a setting a user believes is in
  effect. Either is refused, with the nearest declared name when there is one.
  """
  import difflib  # pylint: disable=g-import-not-at-top

  def fields(node, prefix=''):
    for key, value in node.items():
      yield prefix + key
      if hasattr(value, 'items') and not isinstance(value, dict):
        yield from fields(value, f'{prefix}{key}.')

  known = set(fields(defaults))
  for field in fields(config):
    group, _, name = field.rpartition('.')
    if field in known or (group and group not in known):
      continue  # inside a group already refused
    siblings = [k.rpartition('.')[2] for k in known if k.rpartition('.')[0] == group]
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.8)
    hint = f'did you mean config.{group + "." if group else ""}{close[0]}?' if close else (
        'configs/default.py declares every field')
    raise errors.ConfigError(f'config.{field} is not a field of the config (set in the --config '
                             f'file): se_flax would not read it; {hint}')


def _os_error(e: OSError, workdir):
  """(message, exit code) of a file error outside se_flax's own checks."""
  if isinstance(e, FileNotFoundError):
    return e, errors.EXIT_CONFIG_ERROR
  where = e.filename
  inside = where is not None and workdir and os.path.abspath(
      os.fspath(where)).startswith(os.path.abspath(workdir) + os.sep)
  if where is None or inside or e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
    return e, errors.EXIT_WRITE_ERROR
  # Outside the workdir: a data_dir where data is prepared, or an output the config names.
  return (f'cannot write {os.fspath(where)!r} ({e.strerror}): se_flax writes there because the '
          'config points there (data to prepare in config.dataset.data_dir, or an output '
          'file); make it writable or point the config at a writable place',
          errors.EXIT_CONFIG_ERROR)


def _stored_configs(workdir, defaults):
  """eval and analyze without --config: a function step -> (the config stored with checkpoint
  `step`, or with the newest step whose config reads when `step` is None; that step).

  `defaults` (a config, or None) fills the fields a checkpoint written before
  they existed lacks; their default values leave that run as it was. Evaluation
  asks again for the step it restores (train/loop.py: trained_state), so a step
  whose state is damaged lends its config to no other step.
  """
  from se_flax.train import checkpoint  # pylint: disable=g-import-not-at-top

  def read(step):
    config, stored_step = checkpoint.stored_config(workdir, step)
    if defaults is not None:
      config = config_lib.with_defaults(config, defaults)
    return config, stored_step

  return read


def run(mode, config, workdir, step=None, coordinator_address=None, num_processes=None,
        process_id=None, defaults=None, topology=None, search_batch=True):
  """Runs `mode`; returns the exit code (se_flax/errors.py).

  `defaults`: the base config (configs/default.py), for a config read back from
  a checkpoint (eval and analyze without --config).
  """
  # pylint: disable=g-import-not-at-top  (jax and flax come with these: after the flag rules)
  try:
    _check_command(mode, config, workdir, topology)
    if config is not None and defaults is not None:
      _check_field_names(config, defaults)
    if mode in STORED_CONFIG_MODES:  # training saves on SIGTERM (train/preemption.py)
      signal.signal(signal.SIGTERM, _on_terminate)
    from se_flax import check
    if mode == 'summary':
      print(check.describe(config))
      return errors.EXIT_OK
    workdir = paths.resolve_str(workdir)  # gs://... stays a URL (docs/multihost.md)
    stored = None
    if config is None:
      stored = _stored_configs(workdir, defaults)
      config, _ = stored(step)
    from se_flax.train import parallel
    _check_step_and_processes(mode, step, coordinator_address, num_processes, process_id,
                              parallel.multi_process_environment())
    parallel.maybe_initialize_distributed(coordinator_address, num_processes, process_id)
    # Before TensorFlow is imported and any data read: a typo costs seconds.
    check.check_config(config)
    return _dispatch(mode, config, workdir, step, topology, stored, search_batch)
  except errors.SEFlaxError as e:
    return fail(e, e.exit_code)
  except KeyboardInterrupt:
    # Training saves on Ctrl-C (train/preemption.py); eval, analyze and set-up stop here.
    return fail('interrupted', errors.EXIT_INTERRUPTED)
  except _Terminated:
    return fail(
        f'terminated (SIGTERM) during --mode={mode}, which writes nothing; re-run the '
        'same command to do it again', errors.EXIT_TERMINATED)
  except OSError as e:
    # Files outside se_flax's own checks: a path that is not there (imported
    # weights), or a write that failed (data preparation, metrics, analysis).
    return fail(*_os_error(e, workdir))
  except Exception as e:  # pylint: disable=broad-exception-caught
    from se_flax.train import parallel
    if not parallel.is_lost_process_error(e):
      raise
    fail(
        f'lost contact with another process of this {parallel.jax.process_count()}-process '
        f'run ({str(e).splitlines()[0][:300]}). The run cannot continue: restart every '
        'process with the same command; it resumes from the newest checkpoint.',
        errors.EXIT_LOST_PROCESS)
    # Exit now: jax's exit handler would wait for the lost peer at a shutdown barrier.
    os._exit(errors.EXIT_LOST_PROCESS)  # pylint: disable=protected-access
