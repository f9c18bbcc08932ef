"""A closed console (`main.py ... | head -1`, a `tee` that died) stops the output, not the run.

main.py runs with its standard output (and error) on a pipe whose reader
closes it after the first line; the run must end as an unbroken run does,
with the same checkpoints and metrics.
"""

import subprocess

import pytest

from tests.integration import harness


@pytest.mark.parametrize('streams', ['stdout', 'stdout and stderr'])
def test_run_completes_after_its_reader_goes(reference_run, digits_data, jax_cache, tmp_path,
                                             streams):
  workdir = tmp_path / 'run'
  with open(tmp_path / 'err', 'w') as err_file:
    proc = subprocess.Popen(harness.command(workdir, digits_data), cwd=harness.REPO,
                            env=harness.env(2, jax_cache,
                                            fast_compile=False), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if streams != 'stdout' else err_file)
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    code = proc.wait(timeout=300)
  err = (tmp_path / 'err').read_text()
  assert first, err
  assert code == 0, harness.describe(code, '', err)
  assert 'Broken pipe' not in err and 'Traceback' not in err, err
  assert harness.checkpoint_steps(workdir) == harness.checkpoint_steps(reference_run)
  harness.assert_same_arrays(harness.checkpoint_arrays(workdir),
                             harness.checkpoint_arrays(reference_run))
  assert harness.metric_lines(workdir) == harness.metric_lines(reference_run)
