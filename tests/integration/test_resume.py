"""A stopped run, started again, ends exactly where an uninterrupted run ends.

Stopped three ways: by finishing a shorter run (k steps, then N), by SIGKILL
at a random step, and by SIGTERM (preemption). In each case the final
parameters are bitwise those of the uninterrupted reference run, and so are
the metrics.jsonl lines written after the restart (timings aside).
"""

import random
import re
import signal

import pytest

from se_flax import errors
from tests.integration import harness


@pytest.mark.parametrize('k', [7])
def test_k_steps_then_n_equals_n_steps(reference_run, digits_run, tmp_path, k):
  # 7 is neither a multiple of log_every_steps (4) nor of checkpoint_every_steps (3):
  # the resumed run's first train line (step 8) holds steps 5-7 from before the restart.
  workdir = tmp_path / 'run'
  code, out, err = digits_run(f'--config.num_train_steps={k}', workdir=workdir)
  assert code == 0, harness.describe(code, out, err)
  assert harness.checkpoint_steps(workdir)[-1] == k
  code, out, err = digits_run(workdir=workdir)
  assert code == 0, harness.describe(code, out, err)
  assert f'Resuming from checkpoint step {k}' in out
  harness.assert_same_arrays(harness.checkpoint_arrays(workdir),
                             harness.checkpoint_arrays(reference_run))
  resumed = harness.metric_lines(workdir, after=k)
  assert resumed == harness.metric_lines(reference_run, after=k)
  assert resumed[0]['step'] == 8 and resumed[0]['steps'] == 4.0  # a whole window


def test_sigkill_at_a_random_step_then_restart(reference_run, digits_data, jax_cache, tmp_path):
  workdir = tmp_path / 'run'
  # A logged step after the first checkpoint (3), early enough to leave steps to kill.
  kill_after = random.Random().choice([4, 8, 12])
  proc = harness.start(workdir, digits_data, cache_dir=jax_cache)
  try:
    harness.wait_until(lambda: (harness.last_step_logged(workdir) >= kill_after
                                and harness.checkpoint_steps(workdir)), proc,
                       what=f'step {kill_after} and a finished checkpoint')
  finally:
    harness.stop(proc, signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL, 'finished before it could be killed'
  assert harness.checkpoint_steps(workdir), 'killed before the first checkpoint'
  stopped_at = harness.last_step_logged(workdir)

  code, out, err = harness.run(workdir, digits_data, cache_dir=jax_cache)
  assert code == 0, harness.describe(code, out, err)
  resumed_from = int(re.search(r'Resuming from checkpoint step (\d+)', out).group(1))
  assert 3 <= resumed_from <= harness.STEPS, (kill_after, stopped_at, resumed_from)
  harness.assert_same_arrays(harness.checkpoint_arrays(workdir),
                             harness.checkpoint_arrays(reference_run))
  # Lines the killed run wrote past its checkpoint are dropped and written again.
  assert harness.metric_lines(workdir) == harness.metric_lines(reference_run)


def test_sigterm_checkpoints_the_current_step_and_resumes_there(reference_run, digits_data,
                                                                jax_cache, tmp_path):
  workdir = tmp_path / 'run'
  signal_after = random.Random().choice([4, 8, 12])
  proc = harness.start(workdir, digits_data, cache_dir=jax_cache)
  try:
    harness.wait_until(lambda: harness.last_step_logged(workdir) >= signal_after, proc,
                       what=f'step {signal_after}')
  finally:
    harness.stop(proc, signal.SIGTERM)
  code, out, err = harness.finish(proc)
  assert code == errors.EXIT_PREEMPTED, harness.describe(code, out, err)
  saved = int(re.search(r'Preempted: saved checkpoint step (\d+)', out).group(1))
  assert signal_after <= saved < harness.STEPS
  assert harness.checkpoint_steps(workdir)[-1] == saved

  code, out, err = harness.run(workdir, digits_data, cache_dir=jax_cache)
  assert code == 0, harness.describe(code, out, err)
  assert f'Resuming from checkpoint step {saved} ' in out
  harness.assert_same_arrays(harness.checkpoint_arrays(workdir),
                             harness.checkpoint_arrays(reference_run))
  assert harness.metric_lines(workdir) == harness.metric_lines(reference_run)
