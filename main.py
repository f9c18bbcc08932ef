"""se_flax entry point: parses flags and hands over to se_flax.

  python main.py --config=configs/imagenet.py:model=se_resnet50 --workdir=DIR --mode=train
  python main.py --config=configs/digits.py --workdir=DIR --config.num_epochs=5
  python main.py --config=configs/imagenet.py:model=se_resnet50 --mode=summary
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from se_flax import runtime

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/digits.py:r=8.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'summary', 'analyze'],
                          'train: train (and resume); eval: evaluate a checkpoint; '
                          'summary: parameters, GMACs and a per-stage table; '
                          'analyze: excitation statistics of a trained model.')
_STEP = flags.DEFINE_integer('step', None, 'eval/analyze: checkpoint step (default: the latest).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0, for hosts that cannot discover each other.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes (with a coordinator).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index (with a coordinator).')
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    # Library INFO chatter (checkpoint threads, compilation) hides the progress lines.
    logging.set_verbosity(logging.WARNING)
  from se_flax import cli  # pylint: disable=g-import-not-at-top
  return cli.run(mode=_MODE.value, config=_CONFIG.value, workdir=_WORKDIR.value, step=_STEP.value,
                 coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                 process_id=_PROCESS_ID.value)


if __name__ == '__main__':
  # Before the flags are parsed: a config file imports jax, which sets its own
  # TensorFlow log level unless one is set already.
  runtime.setup()
  app.run(main)
