"""The modes of main.py; turns expected failures into one clear message and an exit code.

Every expected failure is an `errors.SEFlaxError` that carries its exit code
(se_flax/errors.py; docs/failures.md lists them for users).
"""

import os
import sys

from se_flax import config_lib
from se_flax import errors
from se_flax import paths

MODES = ('train', 'eval', 'summary', 'analyze')


def _fail(message, code):
  print(f'error: {message}', file=sys.stderr, flush=True)
  return code


def _dispatch(mode, config, workdir, step):
  # pylint: disable=g-import-not-at-top  (TensorFlow comes with these: only after the check)
  if mode == 'analyze':
    from se_flax.analysis import excitation
    return excitation.run(config, workdir, step)
  from se_flax.train import loop
  if mode == 'train':
    return loop.train_and_evaluate(config, workdir)
  return loop.evaluate_checkpoint(config, workdir, step)


def _stored_config(mode, workdir, step, defaults):
  """eval and analyze without --config: the config the run stored with its checkpoint.

  `defaults` (a config, or None) fills the fields a checkpoint written before
  they existed lacks; their default values leave that run as it was.
  """
  if mode not in ('eval', 'analyze'):
    raise errors.ConfigError(f'--config is required for --mode={mode}')
  from se_flax.train import checkpoint  # pylint: disable=g-import-not-at-top
  config, stored_step = checkpoint.stored_config(workdir, step)
  if defaults is not None:
    config = config_lib.with_defaults(config, defaults)
  print(f'Using the config stored with checkpoint step {stored_step} in {workdir}/checkpoints',
        flush=True)
  return config


def run(mode, config, workdir, step=None, coordinator_address=None, num_processes=None,
        process_id=None, defaults=None):
  """Runs `mode`; returns the exit code (se_flax/errors.py).

  `defaults`: the base config (configs/default.py), for a config read back from
  a checkpoint (eval and analyze without --config).
  """
  from se_flax import check  # pylint: disable=g-import-not-at-top
  from se_flax.train import parallel  # pylint: disable=g-import-not-at-top
  try:
    if mode not in MODES:
      raise errors.ConfigError(f'--mode={mode!r} is unknown; choose one of {list(MODES)}')
    if mode == 'summary':
      print(check.describe(config))
      return errors.EXIT_OK
    if not workdir:
      raise errors.ConfigError(f'--workdir is required for --mode={mode}')
    workdir = paths.resolve_str(workdir)  # gs://... stays a URL (docs/multihost.md)
    if config is None:
      config = _stored_config(mode, workdir, step, defaults)
    parallel.maybe_initialize_distributed(coordinator_address, num_processes, process_id)
    # Before TensorFlow is imported and any data read: a typo costs seconds.
    check.check_config(config)
    return _dispatch(mode, config, workdir, step)
  except errors.SEFlaxError as e:
    return _fail(e, e.exit_code)
  except KeyboardInterrupt:
    # Training saves on Ctrl-C (train/preemption.py); eval, analyze and set-up stop here.
    return _fail('interrupted', errors.EXIT_INTERRUPTED)
  except OSError as e:
    # Files outside se_flax's own checks: a path that is not there (imported
    # weights), or a write that failed (data preparation, metrics, analysis).
    return _fail(e, errors.EXIT_CONFIG_ERROR if isinstance(e, FileNotFoundError)
                 else errors.EXIT_WRITE_ERROR)
  except Exception as e:  # pylint: disable=broad-exception-caught
    if not parallel.is_lost_process_error(e):
      raise
    _fail(f'lost contact with another process of this {parallel.jax.process_count()}-process '
          f'run ({str(e).splitlines()[0][:300]}). The run cannot continue: restart every '
          'process with the same command; it resumes from the newest checkpoint.',
          errors.EXIT_LOST_PROCESS)
    # Exit now: jax's exit handler would wait for the lost peer at a shutdown barrier.
    os._exit(errors.EXIT_LOST_PROCESS)  # pylint: disable=protected-access
