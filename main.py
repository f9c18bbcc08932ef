"""se_flax entry point: parses the flags and calls se_flax.cli.run, which owns the modes.

  python main.py --config=configs/imagenet.py:model=se_resnet50 --workdir=DIR --mode=train
  python main.py --config=configs/digits.py --workdir=DIR --config.num_epochs=5
  python main.py --config=configs/imagenet.py:model=se_resnet50 --mode=summary
  python main.py --workdir=DIR --mode=eval     # the config stored with the checkpoint

A command line that cannot work (an unknown flag or config field, a value of
the wrong type, a missing config file) ends with one `error:` line and exit
code 2 (se_flax/flags.py; docs/failures.md).
"""

import sys

from absl import app
from absl import flags
from absl import logging

from se_flax import cli
from se_flax import errors
from se_flax import flags as se_flags
from se_flax import runtime

_CONFIG = se_flags.define_config_flag(
    'Config file, e.g. configs/digits.py:r=8. Optional for '
    f'--mode={"/".join(cli.STORED_CONFIG_MODES)}: default the config stored with the checkpoint.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
_MODE = flags.DEFINE_enum('mode', 'train', list(cli.MODES),
                          '; '.join(f'{mode}: {what}' for mode, what in cli.MODES.items()) + '.')
_STEP = flags.DEFINE_integer('step', None, 'eval/analyze: checkpoint step (default: the latest).')
_TOPOLOGY = flags.DEFINE_string('topology', None,
                                'compile: the TPU slice, e.g. v5p-8, v4-32, v5e-256, v6e-64.')
_SEARCH_BATCH = flags.DEFINE_boolean(
    'search_batch', True, 'compile: also find the largest train batch per chip that fits in HBM '
    '(2 to 4 more compiles of the train step).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for hosts that cannot find each other.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Number of processes (with a coordinator).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index (with a coordinator).')


def _parse_flags(argv):
  """absl's flag parsing, with every failure one `error:` line and exit 2."""
  try:
    return se_flags.parse(argv, _CONFIG)
  except errors.ConfigError as e:
    sys.exit(cli.fail(e, e.exit_code))


def main(argv):
  del argv  # se_flags.parse refused any positional argument
  if not flags.FLAGS['verbosity'].present:
    # Library INFO chatter (checkpoint threads, compilation) hides the progress lines.
    logging.set_verbosity(logging.WARNING)
  from configs import default  # pylint: disable=g-import-not-at-top
  return cli.run(mode=_MODE.value, config=_CONFIG.value, workdir=_WORKDIR.value, step=_STEP.value,
                 coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                 process_id=_PROCESS_ID.value, defaults=default.get_base_config(),
                 topology=_TOPOLOGY.value, search_batch=_SEARCH_BATCH.value)


if __name__ == '__main__':
  # Before the flags are parsed: a config file imports jax, which sets its own
  # TensorFlow log level unless one is set already.
  runtime.setup()
  # `main.py ... | head -1` stops the console output, not the run.
  runtime.keep_running_without_console()
  app.run(main, flags_parser=_parse_flags)
