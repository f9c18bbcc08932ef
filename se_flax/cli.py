"""The modes of main.py; turns expected failures into one clear message and an exit code.

Exit codes (README, "Failure behaviour"):

  0   done
  1   an unexpected error (a Python traceback)
  2   a config that cannot work, missing or unusable data, or a workdir that
      holds another run's checkpoints: fix the command
  3   non-finite loss or state (loop.EXIT_NON_FINITE)
  4   checkpoints exist but none is readable (EXIT_CHECKPOINT_CORRUPT)
  5   the workdir cannot be written: unwritable, or the disk is full (EXIT_WRITE_ERROR)
  6   another process of a multi-process run was lost (EXIT_LOST_PROCESS)
  42  preempted (SIGTERM) after saving a checkpoint: re-run to resume
      (checkpoint.PREEMPTED_EXIT_CODE)
"""

import os
import sys

from se_flax.validate import DATASET_SHAPES  # pylint: disable=unused-import  (public here too)

EXIT_CONFIG_ERROR = 2
EXIT_CHECKPOINT_CORRUPT = 4
EXIT_WRITE_ERROR = 5
EXIT_LOST_PROCESS = 6
MODES = ('train', 'eval', 'summary', 'analyze')


def summary(config) -> str:
  from se_flax import validate  # pylint: disable=g-import-not-at-top
  from se_flax.models import summary as summary_lib  # pylint: disable=g-import-not-at-top
  name = config.dataset.name
  if name not in DATASET_SHAPES:
    raise validate.ConfigError(f'config.dataset.name={name!r} is unknown; known: {sorted(DATASET_SHAPES)}')
  num_classes, channels = DATASET_SHAPES[name]
  shape = (config.dataset.image_size, config.dataset.image_size, channels)
  validate.validate(config, num_devices=1, num_processes=1, image_shape=shape, num_classes=num_classes)
  model = validate.build_model(config, num_classes)
  text = summary_lib.summarize(model, shape, config.model.name).table()
  spec = validate.se_spec(config)
  if spec is not None:
    text += f'\nSE: {spec}'
  return text


def _fail(message, code):
  print(f'error: {message}', file=sys.stderr, flush=True)
  return code


def run(mode, config, workdir, step=None, coordinator_address=None, num_processes=None,
        process_id=None):
  """Runs `mode`; returns the exit code (see the module docstring)."""
  from se_flax import validate  # pylint: disable=g-import-not-at-top
  from se_flax.train import parallel  # pylint: disable=g-import-not-at-top
  try:
    if mode not in MODES:
      raise validate.ConfigError(f'--mode={mode!r} is unknown; choose one of {list(MODES)}')
    if mode == 'summary':
      print(summary(config))
      return 0
    if not workdir:
      raise validate.ConfigError(f'--workdir is required for --mode={mode}')
    try:
      parallel.maybe_initialize_distributed(coordinator_address, num_processes, process_id)
    except ValueError as e:
      raise validate.ConfigError(str(e)) from e
    except RuntimeError as e:  # a peer or the coordinator never answered
      return _fail(f'could not start the multi-process run (coordinator '
                   f'{coordinator_address or "from the environment"}): '
                   f'{str(e).splitlines()[0][:300]}. Start every process with the same '
                   '--coordinator_address and --num_processes, each with its own --process_id.',
                   EXIT_LOST_PROCESS)
    # Before TensorFlow is imported and any data read: a typo costs seconds.
    validate.validate_before_data(config)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if mode == 'train':
      from se_flax.train import checkpoint  # pylint: disable=g-import-not-at-top
      checkpoint.check_writable(workdir)
    from se_flax.train import loop  # pylint: disable=g-import-not-at-top
    if mode == 'train':
      return loop.train_and_evaluate(config, workdir)
    if mode == 'eval':
      return loop.evaluate_checkpoint(config, workdir, step)
    from se_flax.analysis import excitation  # pylint: disable=g-import-not-at-top
    return excitation.run(config, workdir, step)
  except (validate.ConfigError, FileNotFoundError) as e:
    return _fail(e, EXIT_CONFIG_ERROR)
  except OSError as e:  # unwritable workdir, disk full (checkpoint.CheckpointWriteError)
    return _fail(e, EXIT_WRITE_ERROR)
  except Exception as e:  # pylint: disable=broad-exception-caught
    # Looked up, not imported: a config error should not pay for importing Orbax.
    ckpt_lib = sys.modules.get('se_flax.train.checkpoint')
    if ckpt_lib is not None and isinstance(e, ckpt_lib.CheckpointCorruptError):
      return _fail(e, EXIT_CHECKPOINT_CORRUPT)
    if parallel.is_lost_process_error(e):
      _fail(f'lost contact with another process of this {parallel.jax.process_count()}-process '
            f'run ({str(e).splitlines()[0][:300]}). The run cannot continue: restart every '
            'process with the same command; it resumes from the newest checkpoint.',
            EXIT_LOST_PROCESS)
      # Exit now: jax's exit handler would wait for the lost peer at a shutdown barrier.
      os._exit(EXIT_LOST_PROCESS)  # pylint: disable=protected-access
    raise
