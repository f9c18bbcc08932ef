"""The modes of main.py; turns expected failures into one clear message and an exit code."""

import os
import sys

# Class count and input channels per data set, for commands that need no data (summary).
DATASET_SHAPES = {'imagenet2012': (1000, 3), 'cifar10': (10, 3), 'cifar100': (100, 3), 'digits': (10, 1)}

EXIT_CONFIG_ERROR = 2


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


def run(mode, config, workdir, step=None, coordinator_address=None, num_processes=None,
        process_id=None):
  from se_flax import validate  # pylint: disable=g-import-not-at-top
  try:
    if mode == 'summary':
      print(summary(config))
      return 0
    if not workdir:
      raise validate.ConfigError(f'--workdir is required for --mode={mode}')
    from se_flax.train import parallel  # pylint: disable=g-import-not-at-top
    parallel.maybe_initialize_distributed(coordinator_address, num_processes, process_id)
    from se_flax.train import loop  # pylint: disable=g-import-not-at-top
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if mode == 'train':
      return loop.train_and_evaluate(config, workdir)
    if mode == 'eval':
      return loop.evaluate_checkpoint(config, workdir, step)
    if mode == 'analyze':
      from se_flax.analysis import excitation  # pylint: disable=g-import-not-at-top
      return excitation.run(config, workdir, step)
    raise validate.ConfigError(f'--mode={mode!r} is unknown')
  except (validate.ConfigError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_CONFIG_ERROR
