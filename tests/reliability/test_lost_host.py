"""A process of a two-process run is killed: the other one exits with an error, it does not hang.

The survivor notices at its next collective (the dead peer's sockets close)
or, at the latest, when the peer misses heartbeats for
$SE_FLAX_HEARTBEAT_TIMEOUT_SECONDS (15 s here; 100 s by default). The test
waits for the survivor's exit; its limit only keeps a hang from stalling the
suite, and is far above the heartbeat bound so that a slow machine passes.
"""

import signal
import subprocess

import pytest

from se_flax import errors
from tests import ports
from tests.integration import harness
from tests.integration.test_multihost import start_group
from tests.integration.test_multihost import two_process_runs

HANG_SECONDS = 600


@pytest.mark.slow
@two_process_runs
@pytest.mark.parametrize('killed', [1, 0])
def test_survivor_exits_with_an_error(digits_data, jax_cache, tmp_path, killed):
  workdir = tmp_path / 'run'
  processes = start_group(workdir, digits_data, jax_cache, '--config.num_train_steps=100000',
                          '--config.log_every_steps=2', '--config.eval_every_steps=100000',
                          until=lambda: harness.last_step_logged(workdir) >= 4,
                          env_extra={'SE_FLAX_HEARTBEAT_TIMEOUT_SECONDS': 15})
  survivor = processes[1 - killed]
  try:
    harness.stop(processes[killed], signal.SIGKILL)
    try:
      code, out, err = harness.finish(survivor, timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired:
      pytest.fail(f'process {1 - killed} still ran {HANG_SECONDS} s after process {killed} was '
                  'killed: it hangs')
  finally:
    ports.kill(processes)
  assert code != 0, harness.describe(code, out, err)
  # Our message when the loss shows up in Python; jax's own when its runtime ends the process.
  ours = code == errors.EXIT_LOST_PROCESS and 'error: lost contact with another process' in err
  assert ours or 'JAX distributed service detected fatal errors' in err, harness.describe(
      code, out, err)
