"""Two processes meet through jax.distributed on localhost and train as one 8-device mesh."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from se_flax.train import parallel
from tests.train.tiny import make_batch, tiny_setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  port = _free_port()
  procs = []
  for pid in range(2):
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2',
               JAX_PROCESS_ID=str(pid), PYTHONPATH=REPO)
    procs.append(subprocess.Popen(
        [sys.executable, '-m', 'tests.train.multiprocess_worker', str(tmp_path / 'run'),
         str(tmp_path / f'out{pid}.json')],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  for p in procs:
    output, _ = p.communicate(timeout=240)
    assert p.returncode == 0, output[-3000:]
  results = [json.loads((tmp_path / f'out{pid}.json').read_text()) for pid in range(2)]

  setup = tiny_setup()
  _, metrics = setup.train(setup.state, parallel.global_batch(make_batch(seed=0), setup.mesh))
  for r in results:
    assert (r['process_count'], r['device_count']) == (2, 8)
    np.testing.assert_allclose(r['loss_sum'], float(metrics['loss_sum']), rtol=1e-5)
    assert r['restored_equal']
    assert 'config.batch_size=12' in r['divisible_error'] and 'processes (2)' in r['divisible_error']
  np.testing.assert_array_equal(results[0]['kernel'], results[1]['kernel'])
  assert os.path.isdir(tmp_path / 'run' / 'checkpoints' / '1' / 'state')
