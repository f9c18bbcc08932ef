"""experiments/recipes.py: ResNet-50 and SE-ResNet-50 under the paper's recipe and RSB A3."""

import os

from configs import digits
from configs import imagenet
from experiments import rsb_reference
from experiments import runs
from se_flax import config_lib

SWEEP_FILE = os.path.join(runs.REPO_ROOT, 'experiments', 'recipes.py')


def test_the_imagenet_runs_are_the_config_files_recipes(tmp_path):
  # tests/test_rules.py checks every named recipe; here only the configs matter.
  plan = runs.plan(SWEEP_FILE, str(tmp_path), validate=False)
  assert not plan.dropped
  assert [r.name for r in plan.runs] == [
      'model=resnet50,recipe=paper', 'model=se_resnet50,recipe=paper',
      'model=resnet50,recipe=rsb_a3', 'model=se_resnet50,recipe=rsb_a3'
  ]
  for run in plan.runs:
    model, recipe = run.overrides['model.name'], run.overrides['arg.recipe']
    want = imagenet.get_config(f'model={model},recipe={recipe}')
    assert not config_lib.differences(run.config, want), run.name
    assert f'--config=configs/imagenet.py:model=se_resnet50,recipe={recipe}' in run.args


def test_a_reduction_ratio_reaches_every_se_run(tmp_path):
  plan = runs.plan(SWEEP_FILE, str(tmp_path), extra={'model.se.reduction': 8}, validate=False)
  assert {r.config.model.se.reduction for r in plan.runs} == {8}
  assert plan.runs[3].config.optimizer.name == 'lamb'


def test_on_digits_the_recipe_is_the_digits_configs(tmp_path):
  plan = runs.plan(SWEEP_FILE, str(tmp_path), dataset='digits', validate=False)
  by_name = {r.name: r for r in plan.runs}
  a3 = by_name['model=se_cifar_resnet20,recipe=rsb_a3'].config
  want = digits.get_config('model=se_cifar_resnet20,epochs=15,recipe=rsb_a3')
  # The digits target sets its own eval and checkpoint cadence on top of the config file.
  changed = {k for k, _, _ in config_lib.differences(a3, want)}
  assert changed == {'eval_every_steps', 'checkpoint_every_steps'}
  assert (a3.optimizer.name, a3.loss, a3.mix.cutmix_alpha) == ('lamb', 'bce', 1.0)
  assert by_name['model=cifar_resnet20,recipe=paper'].config.optimizer.name == 'sgd'


def test_published_rows():
  find = rsb_reference.find
  assert find({'model.name': 'resnet50', 'arg.recipe': 'rsb_a3'}).top1 == 21.9
  assert find({'model.name': 'resnet50', 'arg.recipe': 'rsb_a1'}).top1 == 19.6
  assert find({'model.name': 'se_resnet50', 'arg.recipe': 'paper'}).top1 == 23.29
  assert find({'model.name': 'resnet50', 'arg.recipe': 'paper'}).top1 == 24.80
  assert find({'model.name': 'se_resnet50', 'arg.recipe': 'rsb_a3'}) is None
