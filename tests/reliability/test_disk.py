"""An unwritable workdir fails at start; a full disk fails a save and keeps the previous checkpoint.

Root ignores file modes, so "unwritable" is a path under a regular file, or a
read-only mount; "full" is a small tmpfs. Mounting needs root (CAP_SYS_ADMIN):
where that is missing, the tests that need it are skipped, and the in-process
test at the end still covers the save path.
"""

import contextlib
import errno
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

from se_flax import errors
from se_flax.train import checkpoint as ckpt_lib
from tests.integration import harness

# Log lines of absl (W/I/E + date), TensorFlow's C++ logging and Python warnings are not errors.
_NOISE = re.compile(r'^([WIE]\d{4} |[WIE]0000 |WARNING|INFO|\S+:\d+: \w*Warning|\s)')


@contextlib.contextmanager
def tmpfs(path, size, read_only=False):
  path.mkdir(parents=True, exist_ok=True)
  options = f'size={size}' + (',ro' if read_only else '')
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs',
                            str(path)], capture_output=True, text=True, check=False)
  if mounted.returncode:
    pytest.skip(f'cannot mount a tmpfs here ({mounted.stderr.strip()})')
  try:
    yield path
  finally:
    subprocess.run(['umount', '-l', str(path)], check=False)


@pytest.mark.parametrize('where', ['under a file', 'read-only mount'])
def test_unwritable_workdir_fails_at_start(jax_cache, tmp_path, where):
  data_dir = tmp_path / 'tfds'  # empty: nothing may be prepared before the error
  data_dir.mkdir()
  with contextlib.ExitStack() as stack:
    if where == 'under a file':
      (tmp_path / 'a_file').write_text('')
      workdir = tmp_path / 'a_file' / 'run'
    else:
      workdir = stack.enter_context(tmpfs(tmp_path / 'ro', '1m', read_only=True)) / 'run'
    code, out, err = harness.run(workdir, data_dir, cache_dir=jax_cache, log=tmp_path / 'main')
  assert code == errors.EXIT_WRITE_ERROR, harness.describe(code, out, err)
  assert f"workdir '{workdir}' is not writable" in err and 'pass a --workdir' in err
  assert not any(data_dir.iterdir())


def test_disk_full_at_save_keeps_the_previous_checkpoint(reference_run, digits_data, jax_cache,
                                                         tmp_path):
  size = sum(
      f.stat().st_size for f in (reference_run / 'checkpoints' / '3').rglob('*') if f.is_file())
  # Room for one checkpoint and the logs, not for two.
  with tmpfs(tmp_path / 'disk', f'{int(size * 1.5) // 4096 * 4096}') as disk:
    workdir = disk / 'run'
    code, out, err = harness.run(workdir, digits_data, cache_dir=jax_cache, log=tmp_path / 'full')
    assert code == errors.EXIT_WRITE_ERROR, harness.describe(code, out, err)
    # One line: the path, the space, what became of the unfinished save; no Orbax tracebacks.
    assert 'Traceback' not in err, err
    lines = [l for l in err.splitlines() if l.strip() and not _NOISE.match(l)]
    assert len(lines) == 1, err
    assert lines[0].startswith(
        f'error: could not write checkpoint step 6 in {workdir}/checkpoints: '
        'No space left on device (')
    assert 'MB free; a checkpoint takes about' in lines[0] and 'are untouched' in lines[0]
    assert 'its unfinished 6.orbax-checkpoint-tmp is removed' in lines[0]
    assert not list((workdir / 'checkpoints').glob('*.orbax-checkpoint-tmp'))
    assert harness.checkpoint_steps(workdir) == [3]
    harness.assert_same_arrays(harness.checkpoint_arrays(workdir, 3),
                               harness.checkpoint_arrays(reference_run, 3))

    # With space again, the same command resumes from step 3 and ends as if nothing happened.
    subprocess.run(['mount', '-o', 'remount,size=64m', str(disk)], check=True)
    code, out, err = harness.run(workdir, digits_data, cache_dir=jax_cache, log=tmp_path / 'again')
    assert code == 0, harness.describe(code, out, err)
    assert 'Resuming from checkpoint step 3 ' in out
    harness.assert_same_arrays(harness.checkpoint_arrays(workdir),
                               harness.checkpoint_arrays(reference_run))
    shutil.rmtree(workdir)


class _FullDisk:
  """Stands in for Orbax's manager: the save starts, and its commit fails with ENOSPC."""

  def __init__(self, manager):
    self._manager = manager

  def save(self, step, *args, **kwargs):
    self._failing = step
    return True

  def wait_until_finished(self):
    if getattr(self, '_failing', None) is not None:
      self._failing = None
      raise OSError(errno.ENOSPC, 'No space left on device')

  def __getattr__(self, name):
    return getattr(self._manager, name)


def test_failed_save_is_reported_with_its_step(tmp_path):
  """In process, without a mount: the error names the step and the intact checkpoints."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  checkpointer = ckpt_lib.TrainCheckpointer(tmp_path, async_save=False)
  state = {'w': jnp.arange(4.0)}
  assert checkpointer.save(1, state)
  checkpointer.wait_until_finished()
  checkpointer._manager = _FullDisk(checkpointer._manager)  # pylint: disable=protected-access
  checkpointer.save(2, state)
  with pytest.raises(errors.CheckpointWriteError) as info:
    checkpointer.wait_until_finished()
  assert 'could not write checkpoint step 2' in str(info.value)
  assert 'No space left on device' in str(info.value) and '[1] are untouched' in str(info.value)
  assert 'Errno' not in str(info.value)
  assert isinstance(info.value, OSError)
  checkpointer._manager = checkpointer._manager._manager  # pylint: disable=protected-access
  checkpointer.close()
  assert harness.checkpoint_steps(tmp_path) == [1]
  np.testing.assert_array_equal(harness.checkpoint_arrays(tmp_path, 1)['w'], np.arange(4.0))
  assert pathlib.Path(tmp_path / 'checkpoints' / '1').is_dir()


@pytest.mark.parametrize('case', ['name too long', 'data missing'])
def test_failure_before_any_write_leaves_no_directories(digits_data, jax_cache, tmp_path, case):
  top = tmp_path / 'new'
  if case == 'name too long':
    workdir, data_dir, code = top / 'runs' / ('x' * 300) / 'run', digits_data, 5
  else:
    workdir, data_dir, code = top / 'runs' / 'run', tmp_path / 'no_data', 2
  got, out, err = harness.run(workdir, data_dir, cache_dir=jax_cache, log=tmp_path / 'main')
  assert got == code, harness.describe(got, out, err)
  assert 'Traceback' not in err
  if case == 'name too long':
    assert 'longer than the file system allows' in err and 'shorter names' in err
  assert not top.exists(), sorted(top.rglob('*'))


def test_read_only_data_dir_is_a_config_error(jax_cache, tmp_path):
  with tmpfs(tmp_path / 'data', '1m', read_only=True) as data_dir:
    code, out, err = harness.run(tmp_path / 'run', data_dir, cache_dir=jax_cache,
                                 log=tmp_path / 'main')
  assert code == errors.EXIT_CONFIG_ERROR, harness.describe(code, out, err)
  lines = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1 and f"cannot write '{data_dir}" in lines[0], err
  assert 'Read-only file system' in lines[0] and 'Errno' not in lines[0]
  assert 'Traceback' not in err
