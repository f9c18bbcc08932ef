"""The modes of main.py and the rules between its flags; each expected failure one line and a code.

main.py parses the flags (se_flax/flags.py) and calls `run`. Every expected
failure is an `errors.SEFlaxError` that carries its exit code
(se_flax/errors.py; docs/failures.md lists them for users).
"""

import os
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


def _check_command(mode, config, workdir):
  """What --mode needs of the other flags; before anything heavy is imported."""
  if mode not in MODES:
    raise errors.ConfigError(f'--mode={mode} is unknown; choose one of {list(MODES)}')
  if config is None and mode not in STORED_CONFIG_MODES:
    raise errors.ConfigError(f'--config is required for --mode={mode}, '
                             'e.g. --config=configs/digits.py')
  if not workdir and mode != 'summary':
    raise errors.ConfigError(f'--workdir is required for --mode={mode}')


def _dispatch(mode, config, workdir, step, topology=None):
  # pylint: disable=g-import-not-at-top  (TensorFlow comes with these: only after the check)
  if mode == 'compile':
    from se_flax.train import aot
    return aot.run(config, workdir, topology)
  if mode == 'analyze':
    from se_flax.analysis import excitation
    return excitation.run(config, workdir, step)
  from se_flax.train import loop
  if mode == 'train':
    return loop.train_and_evaluate(config, workdir)
  return loop.evaluate_checkpoint(config, workdir, step)


def _stored_config(workdir, step, defaults):
  """eval and analyze without --config: the config the run stored with its checkpoint.

  `defaults` (a config, or None) fills the fields a checkpoint written before
  they existed lacks; their default values leave that run as it was.
  """
  from se_flax.train import checkpoint  # pylint: disable=g-import-not-at-top
  config, stored_step = checkpoint.stored_config(workdir, step)
  if defaults is not None:
    config = config_lib.with_defaults(config, defaults)
  print(f'Using the config stored with checkpoint step {stored_step} in {workdir}/checkpoints',
        flush=True)
  return config


def run(mode, config, workdir, step=None, coordinator_address=None, num_processes=None,
        process_id=None, defaults=None, topology=None):
  """Runs `mode`; returns the exit code (se_flax/errors.py).

  `defaults`: the base config (configs/default.py), for a config read back from
  a checkpoint (eval and analyze without --config).
  """
  # pylint: disable=g-import-not-at-top  (jax and flax come with these: after the flag rules)
  try:
    _check_command(mode, config, workdir)
    from se_flax import check
    if mode == 'summary':
      print(check.describe(config))
      return errors.EXIT_OK
    workdir = paths.resolve_str(workdir)  # gs://... stays a URL (docs/multihost.md)
    if config is None:
      config = _stored_config(workdir, step, defaults)
    from se_flax.train import parallel
    parallel.maybe_initialize_distributed(coordinator_address, num_processes, process_id)
    # Before TensorFlow is imported and any data read: a typo costs seconds.
    check.check_config(config)
    return _dispatch(mode, config, workdir, step, topology)
  except errors.SEFlaxError as e:
    return fail(e, e.exit_code)
  except KeyboardInterrupt:
    # Training saves on Ctrl-C (train/preemption.py); eval, analyze and set-up stop here.
    return fail('interrupted', errors.EXIT_INTERRUPTED)
  except OSError as e:
    # Files outside se_flax's own checks: a path that is not there (imported
    # weights), or a write that failed (data preparation, metrics, analysis).
    return fail(
        e,
        errors.EXIT_CONFIG_ERROR if isinstance(e, FileNotFoundError) else errors.EXIT_WRITE_ERROR)
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
