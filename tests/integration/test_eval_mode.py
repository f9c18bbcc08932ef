"""--mode=eval on a trained workdir: the newest checkpoint, or the one --step names."""

import re

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
  return next(r for r in harness.metric_lines(workdir)
              if r['step'] == step and r['split'] == 'eval')


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
