"""Ctrl-C: the first SIGINT saves the current step and exits 130; a second one exits at once.

Real main.py processes and real signals. The saved state must equal what the
loop would save on its own: it is restored and compared with a checkpoint
written by an uninterrupted run of the same length.
"""

import signal

from se_flax import errors
from tests.integration import harness

LONG = ('--config.num_train_steps=100000',)


def _start_and_wait_for_a_checkpoint(digits_data, jax_cache, tmp_path):
  workdir = tmp_path / 'run'
  proc = harness.start(workdir, digits_data, *LONG, cache_dir=jax_cache, log=tmp_path / 'main')
  harness.wait_until(lambda: harness.checkpoint_steps(workdir), proc, what='a checkpoint')
  return workdir, proc


def test_ctrl_c_saves_the_current_step_and_resumes(digits_data, jax_cache, tmp_path):
  workdir, proc = _start_and_wait_for_a_checkpoint(digits_data, jax_cache, tmp_path)
  harness.stop(proc, signal.SIGINT)
  code, out, err = harness.finish(proc)
  assert code == errors.EXIT_INTERRUPTED == 130, harness.describe(code, out, err)
  assert 'Traceback' not in err
  saved = harness.checkpoint_steps(workdir)[-1]
  assert (f'Interrupted: saved checkpoint step {saved}; exiting with code 130. Re-run the same '
          'command to resume.') in out
  assert 'Ctrl-C again to exit at once' in err
  # The interrupted run's state at step `saved` is the uninterrupted run's.
  reference = tmp_path / 'reference'
  harness.run_ok(reference, digits_data, f'--config.num_train_steps={saved}', cache_dir=jax_cache)
  harness.assert_same_arrays(harness.checkpoint_arrays(workdir, saved),
                             harness.checkpoint_arrays(reference, saved))


def test_second_ctrl_c_exits_at_once_and_keeps_the_checkpoints(digits_data, jax_cache, tmp_path):
  workdir, proc = _start_and_wait_for_a_checkpoint(digits_data, jax_cache, tmp_path)
  before = harness.checkpoint_steps(workdir)
  harness.stop(proc, signal.SIGINT)
  harness.wait_until(lambda: 'Ctrl-C again' in (tmp_path / 'main.err').read_text(), proc,
                     what='the first interrupt')
  harness.stop(proc, signal.SIGINT)
  code, out, err = harness.finish(proc)
  assert code == errors.EXIT_INTERRUPTED, harness.describe(code, out, err)
  assert 'Interrupted again: exiting at once with code 130' in err
  assert 'Traceback' not in err
  after = harness.checkpoint_steps(workdir)
  assert set(before) <= set(after) or after[-1] > before[-1]
  # Every finished checkpoint reads back, and the run resumes from the newest one.
  for step in after:
    harness.checkpoint_arrays(workdir, step)
  code, out, err = harness.run(workdir, digits_data, f'--config.num_train_steps={after[-1] + 1}',
                               cache_dir=jax_cache, log=tmp_path / 'resumed')
  assert code == 0, harness.describe(code, out, err)
  assert f'Resuming from checkpoint step {after[-1]}' in out


def test_sigterm_to_eval_says_so_and_writes_nothing(reference_run, digits_data, jax_cache,
                                                    tmp_path):
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  before = sorted((p.relative_to(workdir), p.stat().st_mtime_ns) for p in workdir.rglob('*'))
  proc = harness.start(workdir, None, '--mode=eval', base=(), cache_dir=jax_cache,
                       log=tmp_path / 'eval')
  harness.wait_until(lambda: 'Using the config stored' in (tmp_path / 'eval.out').read_text(), proc,
                     what='the eval to start')
  harness.stop(proc, signal.SIGTERM)
  code, out, err = harness.finish(proc)
  assert code == errors.EXIT_TERMINATED == 143, harness.describe(code, out, err)
  lines = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1 and 'terminated (SIGTERM) during --mode=eval' in lines[0], err
  assert 'Traceback' not in err
  assert sorted(
      (p.relative_to(workdir), p.stat().st_mtime_ns) for p in workdir.rglob('*')) == before
