"""A stopped run, started again, ends exactly where an uninterrupted run ends.

Stopped three ways: by finishing a shorter run (k steps, then N), by SIGKILL
at a random step, and by SIGTERM (preemption). In each case the final
parameters are bitwise those of the uninterrupted reference run, and so are
the metrics.jsonl lines written after the restart (timings aside).

The step at which a run is stopped is drawn from a generator seeded by
$SE_FLAX_TEST_SEED, or by a fresh seed that the test prints; a failure
names its seed, and setting $SE_FLAX_TEST_SEED to it draws the same steps.
"""

import os
import random
import re
import signal

import pytest

from se_flax import errors
from tests.integration import harness

# Logged steps after the first checkpoint (3), early enough to leave steps to stop at.
STOP_AFTER = (4, 8, 12)


def stop_step(name):
  """(step, note): a step of STOP_AFTER from the seeded generator, and how to draw it again."""
  seed = int(os.environ.get('SE_FLAX_TEST_SEED') or random.SystemRandom().randrange(2 ** 32))
  step = random.Random(f'{seed}/{name}').choice(STOP_AFTER)
  note = f'stopped after step {step}; SE_FLAX_TEST_SEED={seed} repeats it'
  print(note)  # pytest shows it with a failure
  return step, note


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
  kill_after, note = stop_step('sigkill')
  proc = harness.start(workdir, digits_data, cache_dir=jax_cache)
  try:
    harness.wait_until(
        lambda:
        (harness.last_step_logged(workdir) >= kill_after and harness.checkpoint_steps(workdir)),
        proc, what=f'step {kill_after} and a finished checkpoint')
  finally:
    harness.stop(proc, signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL, f'finished before it could be killed ({note})'
  assert harness.checkpoint_steps(workdir), f'killed before the first checkpoint ({note})'
  stopped_at = harness.last_step_logged(workdir)

  code, out, err = harness.run(workdir, digits_data, cache_dir=jax_cache)
  assert code == 0, f'{note}\n{harness.describe(code, out, err)}'
  resumed_from = int(re.search(r'Resuming from checkpoint step (\d+)', out).group(1))
  assert 3 <= resumed_from <= harness.STEPS, (note, stopped_at, resumed_from)
  harness.assert_same_arrays(harness.checkpoint_arrays(workdir),
                             harness.checkpoint_arrays(reference_run))
  # Lines the killed run wrote past its checkpoint are dropped and written again.
  assert harness.metric_lines(workdir) == harness.metric_lines(reference_run), note


def test_sigterm_checkpoints_the_current_step_and_resumes_there(reference_run, digits_data,
                                                                jax_cache, tmp_path):
  workdir = tmp_path / 'run'
  signal_after, note = stop_step('sigterm')
  proc = harness.start(workdir, digits_data, cache_dir=jax_cache)
  try:
    harness.wait_until(lambda: harness.last_step_logged(workdir) >= signal_after, proc,
                       what=f'step {signal_after}')
  finally:
    harness.stop(proc, signal.SIGTERM)
  code, out, err = harness.finish(proc)
  assert code == errors.EXIT_PREEMPTED, f'{note}\n{harness.describe(code, out, err)}'
  saved = int(re.search(r'Preempted: saved checkpoint step (\d+)', out).group(1))
  assert signal_after <= saved < harness.STEPS, note
  assert harness.checkpoint_steps(workdir)[-1] == saved, note

  code, out, err = harness.run(workdir, digits_data, cache_dir=jax_cache)
  assert code == 0, f'{note}\n{harness.describe(code, out, err)}'
  assert f'Resuming from checkpoint step {saved} ' in out
  harness.assert_same_arrays(harness.checkpoint_arrays(workdir),
                             harness.checkpoint_arrays(reference_run))
  assert harness.metric_lines(workdir) == harness.metric_lines(reference_run), note
