"""A process of a two-process run is killed: the other one exits with an error, it does not hang.

The survivor notices at its next collective (the dead peer's sockets close)
or, at the latest, when the peer misses heartbeats for
$SE_FLAX_HEARTBEAT_TIMEOUT_SECONDS (15 s here; 100 s by default).
"""

import signal
import time

import pytest

from se_flax import errors
from tests.integration import harness
from tests.integration.test_multihost import start_processes

BOUND_SECONDS = 90


@pytest.mark.slow
@pytest.mark.parametrize('killed', [1, 0])
def test_survivor_exits_with_an_error(digits_data, jax_cache, tmp_path, killed):
  workdir = tmp_path / 'run'
  processes = start_processes(workdir, digits_data, jax_cache, '--config.num_train_steps=100000',
                              '--config.log_every_steps=2', '--config.eval_every_steps=100000',
                              env_extra={'SE_FLAX_HEARTBEAT_TIMEOUT_SECONDS': 15})
  survivor = processes[1 - killed]
  try:
    harness.wait_until(lambda: harness.last_step_logged(workdir) >= 4, processes[0], timeout=400,
                       what='training under way')
    harness.stop(processes[killed], signal.SIGKILL)
    start = time.monotonic()
    code, out, err = harness.finish(survivor, timeout=BOUND_SECONDS)
    elapsed = time.monotonic() - start
  finally:
    for p in processes:
      harness.stop(p, signal.SIGKILL)
      p.wait()
  assert code != 0 and elapsed < BOUND_SECONDS, harness.describe(code, out, err)
  # Our message when the loss shows up in Python; jax's own when its runtime ends the process.
  ours = code == errors.EXIT_LOST_PROCESS and 'error: lost contact with another process' in err
  assert ours or 'JAX distributed service detected fatal errors' in err, harness.describe(
      code, out, err)
