"""Writes the state a run starts from to an .npz, then runs it (a main.py that shows step 0).

Usage: python tests/integration/init_probe.py --config=... --workdir=DIR --out=FILE.npz
"""

import os
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from se_flax import runtime
from se_flax.train import checkpoint as ckpt_lib
from se_flax.train import loop
from se_flax.train import setup as setup_lib

# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.')
_OUT = flags.DEFINE_string('out', None, 'Where to write the initial variables.')


def main(argv):
  del argv
  runtime.setup()
  config, workdir = _CONFIG.value, _WORKDIR.value
  run = setup_lib.setup(config, workdir)
  with ckpt_lib.TrainCheckpointer.from_config(workdir, config) as checkpointer:
    state = loop.restore_or_init(run, checkpointer)
  leaves = jax.tree_util.tree_flatten_with_path({
      'params': state.params,
      'batch_stats': state.batch_stats
  })[0]
  np.savez(
      _OUT.value, **{
          '/'.join(str(k.key) for k in path): np.asarray(v.addressable_data(0)) for path, v in leaves
      })
  return loop.train_and_evaluate(config, workdir)


if __name__ == '__main__':
  app.run(main)
