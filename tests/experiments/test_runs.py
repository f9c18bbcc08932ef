"""Sweep expansion: run names, commands that rebuild the validated config, translation, validation."""

import os
import shlex
import textwrap

import pytest

from experiments import runs
from experiments import sweep
from experiments import targets

SWEEPS = ('reduction_ratio', 'squeeze', 'excitation', 'stages', 'integration', 'position')


def sweep_path(name):
  return os.path.join(runs.REPO_ROOT, 'experiments', f'{name}.py')


def write_sweep(tmp_path, body):
  path = tmp_path / 'my_sweep.py'
  path.write_text(
      textwrap.dedent('''\
      """A test sweep."""
      from experiments import targets
      BASE = targets.PAPER_ABLATION
      ''') + textwrap.dedent(body))
  return str(path)


def test_names_are_readable_and_safe():
  assert runs.run_name({'model.se.reduction': 8}) == 'se_reduction=8'
  assert runs.run_name({'model.name': 'resnet50'}) == 'model=resnet50'
  assert runs.run_name({
      'model.se.squeeze': 'gather',
      'model.se.gather_extent': 2
  }) == ('se_squeeze=gather,se_gather_extent=2')
  assert runs.run_name({'model.se.stages': (0, 1)}) == 'se_stages=0-1'
  assert runs.run_name({'model.se.stages': None}) == 'se_stages=all'
  assert runs.run_name({
      'learning_rate': 0.1,
      'model.se.bias': False
  }) == ('learning_rate=0.1,se_bias=false')
  assert runs.run_name({'dataset.data_dir': '/a b/c'}) == 'dataset_data_dir=-a-b-c'
  assert runs.run_name({}) == 'base'


@pytest.mark.parametrize('name', SWEEPS)
def test_every_sweep_expands_on_digits(name, tmp_path):
  plan = runs.plan(sweep_path(name), str(tmp_path), 'digits')
  assert plan.runs and plan.tables
  names = [r.name for r in plan.runs]
  assert len(set(names)) == len(names)
  for run in plan.runs:
    assert run.workdir == os.path.join(str(tmp_path), run.name)
    assert run.total_steps == 165  # 15 epochs of 1437 // 128 steps
    assert run.config.model.se.bias is False and run.config.label_smoothing == 0.1


def test_reduction_ratio_on_digits_drops_r_above_the_first_stage_width(tmp_path):
  plan = runs.plan(sweep_path('reduction_ratio'), str(tmp_path), 'digits')
  assert [r.name for r in plan.runs] == [
      'model=cifar_resnet20', 'se_reduction=2', 'se_reduction=4', 'se_reduction=8',
      'se_reduction=16'
  ]
  baseline = plan.runs[0]
  assert baseline.overrides == {'model.name': 'resnet50'}
  assert baseline.config.model.name == 'cifar_resnet20'
  assert baseline.notes == ['model resnet50 -> cifar_resnet20']
  [dropped] = plan.dropped
  assert dropped.overrides == {'model.se.reduction': 32}
  assert 'reduction=32 exceeds the 16 channels' in dropped.reason


def test_squeeze_on_digits_keeps_only_gather_extents_that_divide_every_map(tmp_path):
  plan = runs.plan(sweep_path('squeeze'), str(tmp_path), 'digits')
  gathers = [r.name for r in plan.runs if 'gather' in r.name]
  assert gathers == ['se_squeeze=gather,se_gather_extent=2']
  assert sorted(d.overrides['model.se.gather_extent'] for d in plan.dropped) == [4, 8]
  assert all('does not fit' in d.reason for d in plan.dropped)
  assert 'se_squeeze=none' in [r.name for r in plan.runs]


def test_stages_on_cifar_drops_the_fourth_stage(tmp_path):
  plan = runs.plan(sweep_path('stages'), str(tmp_path), 'cifar10')
  assert [r.name for r in plan.runs] == [
      'model=cifar_resnet56', 'se_stages=0', 'se_stages=1', 'se_stages=2', 'se_stages=all'
  ]
  assert plan.runs[1].config.model.se.stages == (0,)
  assert plan.runs[-1].config.model.se.stages is None
  assert [d.overrides for d in plan.dropped] == [{'model.se.stages': (3,)}]


def test_imagenet_runs_the_papers_recipe(tmp_path):
  plan = runs.plan(sweep_path('reduction_ratio'), str(tmp_path), 'imagenet')
  assert len(plan.runs) == 6 and not plan.dropped
  config = plan.runs[3].config
  assert plan.runs[3].name == 'se_reduction=8'
  assert (config.model.name, config.model.se.reduction, config.model.se.bias) == ('se_resnet50', 8,
                                                                                  False)
  assert (config.batch_size, config.learning_rate, config.lr_reference_batch) == (256, 0.1, 256)
  assert (config.optimizer.momentum, config.label_smoothing) == (0.9, 0.1)
  assert plan.runs[0].config.model.name == 'resnet50'
  assert plan.runs[3].total_steps == 100 * (1_281_167 // 256)


def test_cifar_keeps_its_schedule_and_takes_another_model(tmp_path):
  plan = runs.plan(sweep_path('position'), str(tmp_path), 'cifar100', model='se_cifar_resnet20')
  config = plan.runs[0].config
  assert (config.model.name, config.dataset.name, config.batch_size) == ('se_cifar_resnet20',
                                                                         'cifar100', 128)
  assert config.schedule.boundaries_epochs == (82.0, 123.0)


def test_printed_commands_rebuild_the_validated_config(tmp_path, capsys):
  root = str(tmp_path / 'sq')
  assert sweep.main([
      'experiments/squeeze.py', f'--root={root}', '--dataset=digits', '--launcher=print',
      '--set=num_epochs=3'
  ]) == 0
  printed = [line for line in capsys.readouterr().out.splitlines() if ' main.py ' in line]
  plan = runs.plan(sweep_path('squeeze'), root, 'digits', extra={'num_epochs': 3})
  assert len(printed) == len(plan.runs)
  for line, run in zip(printed, plan.runs):
    argv = shlex.split(line)
    assert argv[1] == 'main.py' and argv[-1] == f'--workdir={run.workdir}'
    config_arg = argv[2].split('=', 1)[1]
    config_file, arg = config_arg.split(':', 1)
    rebuilt = runs.parse_config(config_file, arg, argv[3:-1])
    assert rebuilt.to_dict() == run.config.to_dict()
    assert rebuilt.num_epochs == 3
  assert not os.path.exists(root)  # printing starts nothing and writes nothing


def test_unknown_field_fails_naming_the_run_and_field(tmp_path):
  path = write_sweep(
      tmp_path, '''\
      SWEEP = [{'model.se.reduction': 8}, {'model.se.squeez': 'max'}]
      ''')
  with pytest.raises(runs.SweepError,
                     match=r"run 'se_squeez=max': config.model.se.squeez does not exist"):
    runs.plan(path, str(tmp_path / 'out'), 'digits')


@pytest.mark.parametrize('overrides, field', [
    ({
        'model.se.squeeze': 'maxx'
    }, "config.model.se.squeeze='maxx'"),
    ({
        'model.se.reduction': 0
    }, 'config.model.se.reduction=0'),
    ({
        'model.se.gate': 'swish'
    }, "config.model.se.gate='swish'"),
    ({
        'model.se.reduction': 'eight'
    }, 'config.model.se.reduction'),
])
def test_rejected_value_fails_before_any_run_starts(tmp_path, overrides, field):
  path = write_sweep(tmp_path, f'''\
      SWEEP = [{{'model.se.reduction': 8}}, {overrides!r}]
      ''')
  out, calls = [], []
  code = sweep.main([path, f'--root={tmp_path / "out"}', '--dataset=digits'],
                    runner=lambda *a: calls.append(a) or 0, say=out.append)
  assert code == 2 and not calls
  assert not (tmp_path / 'out' / 'manifest.json').exists()
  [message] = out
  assert f"run '{runs.run_name(overrides)}'" in message and field in message


def test_duplicate_names_and_unknown_dataset_fail(tmp_path):
  path = write_sweep(
      tmp_path, '''\
      SWEEP = [{'model.se.reduction': 8}, {'model.se.reduction': 8}]
      ''')
  with pytest.raises(runs.SweepError, match="both named 'se_reduction=8'"):
    runs.plan(path, str(tmp_path), 'digits', validate=False)
  with pytest.raises(runs.SweepError, match='--dataset'):
    runs.plan(sweep_path('position'), str(tmp_path), 'mnist')


def test_a_model_without_a_twin_is_dropped_off_imagenet(tmp_path):
  path = write_sweep(
      tmp_path, '''\
      SWEEP = [{'model.name': 'se_resnext50_32x4d'}, {'model.se.reduction': 8}]
      ''')
  plan = runs.plan(path, str(tmp_path), 'digits')
  assert [r.name for r in plan.runs] == ['se_reduction=8']
  assert 'no digits counterpart' in plan.dropped[0].reason
  assert [r.name for r in runs.plan(path, str(tmp_path), 'imagenet').runs
         ] == ['model=se_resnext50_32x4d', 'se_reduction=8']


def test_total_steps_matches_the_loop():
  config = runs.parse_config('configs/digits.py', 'epochs=2.5', [])
  assert targets.total_steps(config) == 28  # ceil(2.5 * (1437 // 128))
  config = runs.parse_config('configs/digits.py', '', ['--config.num_train_steps=7'])
  assert targets.total_steps(config) == 7
