"""--mode=eval on a trained workdir: the newest checkpoint, or the one --step names."""

import os
import pathlib
import re

import pytest

from tests.integration import harness

EVAL_LINE = (r'cifar_resnet20 step (\d+) on digits/test: top-1 error ([\d.]+) '
             r'\(accuracy [\d.]+%\), top-5 error ([\d.]+), (\d+) images')


def _evaluate(digits_run, workdir, *flags):
  code, out, err = digits_run('--mode=eval', *flags, workdir=workdir)
  assert code == 0, harness.describe(code, out, err)
  match = re.search(EVAL_LINE, out)
  assert match, out
  return int(match.group(1)), float(match.group(2)), float(match.group(3)), int(match.group(4))


def _logged_eval(workdir, step):
  return next(
      r for r in harness.metric_lines(workdir) if r['step'] == step and r['split'] == 'eval')


def test_eval_latest_and_a_given_step(reference_run, digits_run, tmp_path):
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  before = sorted(p.name for p in (workdir / 'checkpoints').iterdir())
  for flags, step in (((), harness.STEPS), (('--step=10',), 10)):
    got_step, top1, top5, count = _evaluate(digits_run, workdir, *flags)
    logged = _logged_eval(workdir, step)
    assert got_step == step and count == 360 == logged['count']
    assert (top1, top5) == (round(logged['top1_error'], 4), round(logged['top5_error'], 4))
  # Evaluating writes no checkpoint and no metrics.
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == before
  assert harness.metric_lines(workdir) == harness.metric_lines(reference_run)


def test_eval_of_a_missing_step_lists_the_available_ones(reference_run, digits_run, tmp_path):
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  code, out, err = digits_run('--mode=eval', '--step=5', workdir=workdir)
  assert code == 2, harness.describe(code, out, err)
  assert 'no checkpoint for step 5' in err and '10, 12' in err


def test_analyze_of_a_plain_network_says_there_is_nothing_to_analyse(reference_run, digits_run,
                                                                     tmp_path):
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  code, out, err = digits_run('--mode=analyze', workdir=workdir)
  assert code == 2, harness.describe(code, out, err)
  assert 'without SE blocks' in err


def _tree(root):
  return {
      str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
      for p in sorted(pathlib.Path(root).rglob('*'))
  }


def test_eval_without_config_uses_the_stored_one(reference_run, tmp_path):
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  before = _tree(workdir)
  code, out, err = harness.run(workdir, None, '--mode=eval', base=(), log=tmp_path / 'eval')
  assert code == 0, harness.describe(code, out, err)
  assert f'Using the config stored with checkpoint step {harness.STEPS}' in out
  match = re.search(EVAL_LINE, out)
  logged = _logged_eval(workdir, harness.STEPS)
  assert match and int(match.group(1)) == harness.STEPS
  assert float(match.group(2)) == round(logged['top1_error'], 4)
  assert _tree(workdir) == before


def test_eval_without_config_uses_the_config_of_the_step_it_evaluates(reference_run, tmp_path):
  """The newest step's state is damaged, its config intact: the step evaluated and the config
  used are the same older step's."""
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  newest = workdir / 'checkpoints' / str(harness.STEPS)
  for path in newest.rglob('*'):
    if path.is_file() and path.parent.name == 'd':
      os.truncate(path, path.stat().st_size // 2)
  # A field the two steps' configs differ in, which leaves the network alone.
  stored = newest / 'config' / 'metadata'
  stored.write_text(stored.read_text().replace('"eval_batch_size": 360', '"eval_batch_size": 90'))
  previous = harness.checkpoint_steps(workdir)[-2]
  code, out, err = harness.run(workdir, None, '--mode=eval', base=(), log=tmp_path / 'eval')
  assert code == 0, harness.describe(code, out, err)
  assert int(re.search(EVAL_LINE, out).group(1)) == previous
  assert f'Using the config stored with checkpoint step {previous} in' in out, out
  assert f'config stored with checkpoint step {harness.STEPS}' not in out
  assert 'the config differs' not in out + err


def test_eval_may_change_what_leaves_the_network_alone(reference_run, digits_run, tmp_path):
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  step, top1, top5, count = _evaluate(digits_run, workdir, '--config.eval_batch_size=100')
  logged = _logged_eval(workdir, harness.STEPS)
  assert (step, count) == (harness.STEPS, 360)
  assert (top1, top5) == (round(logged['top1_error'], 4), round(logged['top5_error'], 4))


@pytest.mark.parametrize('flag, field', [
    ('--config.model.bn_epsilon=0.001', 'config.model.bn_epsilon (1e-05 stored, 0.001 given)'),
    ('--config.model.name=se_cifar_resnet20', "config.model.name ('cifar_resnet20' stored"),
])
def test_eval_refuses_a_config_that_changes_the_network(reference_run, digits_run, tmp_path, flag,
                                                        field):
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  before = _tree(workdir)
  code, out, err = digits_run('--mode=eval', flag, workdir=workdir)
  assert code == 2, harness.describe(code, out, err)
  lines = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1 and 'changes the network of checkpoint step 20' in lines[0], err
  assert field in lines[0] and 'Leave --config out' in lines[0]
  assert _tree(workdir) == before


def test_eval_skips_a_damaged_newest_checkpoint_without_moving_it(reference_run, digits_run,
                                                                  tmp_path):
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  newest = workdir / 'checkpoints' / str(harness.STEPS)
  data = [p for p in newest.rglob('*') if p.is_file() and p.parent.name == 'd']
  assert data
  for path in data:
    os.truncate(path, path.stat().st_size // 2)
  before = _tree(workdir)
  previous = harness.checkpoint_steps(workdir)[-2]
  code, out, err = digits_run('--mode=eval', workdir=workdir)
  assert code == 0, harness.describe(code, out, err)
  assert int(re.search(EVAL_LINE, out).group(1)) == previous
  warnings = [l for l in err.splitlines() if f'Checkpoint step {harness.STEPS} in' in l]
  assert len(warnings) == 1 and 'left in place' in warnings[0], err
  assert 'Traceback' not in err
  # --step naming the damaged one: exit 4, one line.
  code, out, err = digits_run('--mode=eval', f'--step={harness.STEPS}', workdir=workdir)
  assert code == 4, harness.describe(code, out, err)
  lines = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1 and f'checkpoint step {harness.STEPS} in' in lines[0], err
  assert 'unreadable' in lines[0] and 'choose another --step' in lines[0]
  assert _tree(workdir) == before


def test_eval_of_an_empty_workdir_creates_nothing(digits_run, tmp_path):
  workdir = tmp_path / 'never_trained'
  code, out, err = digits_run('--mode=eval', workdir=workdir)
  assert code == 2, harness.describe(code, out, err)
  assert 'no checkpoint in' in err and 'train first' in err
  assert not workdir.exists()
