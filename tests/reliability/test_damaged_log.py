"""A damaged line in the middle of metrics.jsonl: one warning, the line set aside, the run resumes."""

import pathlib
import shutil

from tests.integration import harness

RESUME_AT = 9  # a checkpoint of the reference run (every 3 steps), with log lines after it


def test_run_resumes_past_a_damaged_middle_line(reference_run, digits_run, tmp_path):
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  for step in harness.checkpoint_steps(workdir):
    if step > RESUME_AT:
      shutil.rmtree(workdir / 'checkpoints' / str(step))
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  lines = path.read_text().splitlines()
  lines[1] = lines[1][:len(lines[1]) // 2] + '\x00garbage'
  path.write_text('\n'.join(lines) + '\n')

  code, out, err = digits_run(workdir=workdir)
  assert code == 0, harness.describe(code, out, err)
  assert f'Resuming from checkpoint step {RESUME_AT} ' in out and 'Traceback' not in err
  warnings = [l for l in err.splitlines() if 'damaged line' in l]
  assert len(warnings) == 1 and 'line 2' in warnings[0], err
  assert (workdir / 'metrics.jsonl.damaged').read_text().strip().endswith('garbage')
  expected = harness.metric_lines(reference_run)
  assert harness.metric_lines(workdir) == expected[:1] + expected[2:]
  harness.assert_same_arrays(harness.checkpoint_arrays(workdir),
                             harness.checkpoint_arrays(reference_run))
