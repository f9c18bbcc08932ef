"""Damaged checkpoints found at start-up, through main.py.

A run skips (and names) a truncated checkpoint, one with a file removed and a
save that never finished, resumes from the newest intact one and still ends
bitwise where an undisturbed run ends. With no intact checkpoint left it
stops with an error instead of training from scratch.
"""

import glob
import os
import shutil

import pytest

from tests.integration import harness

# Reading a damaged checkpoint's metadata fails in several of Orbax's concurrent
# reads at once; the ones not re-raised surface as "never retrieved" noise.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


def truncate_data(step_dir):
  files = glob.glob(str(step_dir / 'state' / '**' / 'd' / '*'), recursive=True)
  assert files
  for path in files:
    os.truncate(path, os.path.getsize(path) // 2)


def test_resumes_from_the_newest_intact_checkpoint(reference_run, digits_run, tmp_path):
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  checkpoints = workdir / 'checkpoints'
  assert harness.checkpoint_steps(workdir) == [3, 6, 9, 10, 12, 15, 18, 20]
  truncate_data(checkpoints / '20')
  os.remove(checkpoints / '18' / 'state' / '_METADATA')
  # What a kill during the save of step 19 would have left.
  shutil.copytree(checkpoints / '15', checkpoints / '19.orbax-checkpoint-tmp-1767000000')

  code, out, err = digits_run(workdir=workdir)
  assert code == 0, harness.describe(code, out, err)
  assert 'step(s) [19]' in err  # the unfinished save is named
  for step in (20, 18):
    assert f'Checkpoint step {step} in {checkpoints} is unreadable' in err
  assert 'Resuming from checkpoint step 15 ' in out
  harness.assert_same_arrays(harness.checkpoint_arrays(workdir),
                             harness.checkpoint_arrays(reference_run))
  assert harness.metric_lines(workdir) == harness.metric_lines(reference_run)
  # The damaged ones are kept aside for inspection; the unfinished one is gone.
  for step in (20, 18):
    assert glob.glob(str(checkpoints / f'{step}.corrupt-*'))
  assert not glob.glob(str(checkpoints / '*tmp*'))


def test_no_intact_checkpoint_is_an_error_not_a_fresh_start(reference_run, digits_run, tmp_path):
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  steps = harness.checkpoint_steps(workdir)
  for step in steps:
    os.truncate(workdir / 'checkpoints' / str(step) / 'state' / 'manifest.ocdbt', 10)
  code, out, err = digits_run(workdir=workdir)
  assert code == 4, harness.describe(code, out, err)
  assert 'error: no readable checkpoint in' in err and 'tried steps 20 (' in err
  assert 'Move the directory aside to start afresh' in err
  # Nothing trained, nothing overwritten.
  assert harness.checkpoint_steps(workdir) == steps
  assert harness.metric_lines(workdir) == harness.metric_lines(reference_run)
  assert 'step 4/' not in out
