"""Two processes meet through jax.distributed on localhost and train as one 8-device mesh."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

from se_flax.train import parallel
from tests import ports
from tests.train.tiny import make_batch
from tests.train.tiny import tiny_setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_workers(tmp_path, port):
  """Both worker processes on `port`; raises ports.PortTaken if the coordinator could not bind."""
  shutil.rmtree(tmp_path / 'run', ignore_errors=True)  # what an attempt on a taken port left
  procs = []
  for pid in range(2):
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2',
               JAX_PROCESS_ID=str(pid), PYTHONPATH=REPO)
    with open(tmp_path / f'worker{pid}.log', 'w') as log:
      proc = subprocess.Popen([
          sys.executable, '-m', 'tests.train.multiprocess_worker',
          str(tmp_path / 'run'),
          str(tmp_path / f'out{pid}.json')
      ], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = tmp_path / f'worker{pid}.log'
    procs.append(proc)
  ports.wait_group(procs, lambda p: pathlib.Path(p.log).read_text(), timeout=400)
  for p in procs:
    assert p.returncode == 0, pathlib.Path(p.log).read_text()[-3000:]


def test_two_processes_match_one_process(tmp_path):
  ports.on_free_port(lambda port: _run_workers(tmp_path, port))
  results = [json.loads((tmp_path / f'out{pid}.json').read_text()) for pid in range(2)]

  setup = tiny_setup()
  _, metrics = setup.train(setup.state, parallel.global_batch(make_batch(seed=0), setup.mesh))
  for r in results:
    assert (r['process_count'], r['device_count']) == (2, 8)
    np.testing.assert_allclose(r['loss_sum'], float(metrics['loss_sum']), rtol=1e-5)
    assert r['restored_equal']
    assert 'config.batch_size=12' in r['divisible_error'] and 'the 8 devices' in r['divisible_error']
  np.testing.assert_array_equal(results[0]['kernel'], results[1]['kernel'])
  assert os.path.isdir(tmp_path / 'run' / 'checkpoints' / '1' / 'state')
