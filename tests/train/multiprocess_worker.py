"""One of two processes that train and checkpoint together (run by test_multiprocess.py).

Usage: python -m tests.train.multiprocess_worker WORKDIR OUT_JSON
with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set.
"""

import json
import os
import sys

from tests import xla

os.environ['XLA_FLAGS'] = xla.flags(4, fast_compile=True)
os.environ['JAX_PLATFORMS'] = 'cpu'

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

jax.config.update('jax_cpu_collectives_implementation', 'gloo')

from se_flax import check  # pylint: disable=g-import-not-at-top
from se_flax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
from se_flax.train import optim
from se_flax.train import parallel
from se_flax.train import state as state_lib
from se_flax.train import step as step_lib
from tests.train.tiny import IMAGE_SHAPE
from tests.train.tiny import make_batch
from tests.train.tiny import make_config
from tests.train.tiny import NUM_CLASSES
from tests.train.tiny import TinyNet


def main(workdir, out_path):
  assert parallel.maybe_initialize_distributed()
  assert parallel.maybe_initialize_distributed()  # idempotent
  pid = jax.process_index()
  mesh = parallel.create_mesh()
  config = make_config()
  # The upfront batch rule, asked with this run's real device and process counts.
  check.check_batches(config, jax.device_count(), jax.process_count())
  try:
    check.check_batches(make_config(batch_size=12), jax.device_count(), jax.process_count())
    divisible_error = ''
  except ValueError as e:
    divisible_error = str(e)

  model = TinyNet()
  tx, schedule = optim.create_optimizer(config, steps_per_epoch=10, total_steps=100)
  state = state_lib.create_train_state(model, jax.random.PRNGKey(0), (1,) + IMAGE_SHAPE, tx, mesh)
  train = step_lib.make_train_step(model, config, mesh, schedule, NUM_CLASSES)
  # Each process holds its half of the same global batch the single-process test uses.
  batch = {k: v[pid * 8:(pid + 1) * 8] for k, v in make_batch(seed=0).items()}
  state, metrics = train(state, parallel.global_batch(batch, mesh))

  ckpt = ckpt_lib.TrainCheckpointer(workdir)
  ckpt.save(1, state, config=config)
  ckpt.wait_until_finished()
  target = state_lib.abstract_train_state(model, (1,) + IMAGE_SHAPE, tx, mesh)
  restored = ckpt.restore(target=target)
  ckpt.close()
  same = all(
      np.array_equal(a.addressable_data(0), b.addressable_data(0))
      for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)))
  result = {
      'process_count': jax.process_count(),
      'device_count': jax.device_count(),
      'loss_sum': float(metrics['loss_sum']),
      'kernel': np.asarray(state.params['Dense_0']['kernel'].addressable_data(0)).tolist(),
      'restored_equal': same,
      'divisible_error': divisible_error,
  }
  with open(out_path, 'w') as f:
    json.dump(result, f)


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
