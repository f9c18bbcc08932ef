"""experiments/architectures.py (Tables 2 and 3), its paper data and the recipes of configs/imagenet.py."""

import os
import re

import pytest

from configs import imagenet
from experiments import paper_tables23
from experiments import runs
from experiments import targets

SWEEP_FILE = os.path.join(runs.REPO_ROOT, 'experiments', 'architectures.py')
# The paper's figures as kept in the repository, with their sources.
REFERENCE = os.path.join(runs.REPO_ROOT, 'experiments', 'paper_reference.md')


def _sweep():
  return runs.load_sweep(SWEEP_FILE)


def test_config_sizes_follow_the_model():
  irv2 = imagenet.get_config('model=se_inception_resnet_v2')
  assert (irv2.dataset.image_size, irv2.dataset.eval_resize) == (299, 352)
  vgg = imagenet.get_config('model=vgg16_bn')
  assert (vgg.dataset.image_size, vgg.dataset.eval_resize) == (224, 256)
  given = imagenet.get_config('model=inception_resnet_v2,image_size=331,eval_resize=378')
  assert (given.dataset.image_size, given.dataset.eval_resize) == (331, 378)


def test_mobile_recipe():
  config = imagenet.get_config('model=se_mobilenet_v1,recipe=mobile')
  assert (config.batch_size, config.learning_rate, config.lr_reference_batch) == (256, 0.1, 256)
  assert config.optimizer.weight_decay == 4e-5
  assert config.num_epochs == 400.0 and config.schedule.step_epochs == 100.0
  assert tuple(config.dataset.crop_area_range) == (0.25, 1.0)
  paper = imagenet.get_config('model=se_resnet50')
  assert (paper.batch_size, paper.learning_rate, paper.optimizer.weight_decay) == (1024, 0.6, 1e-4)
  assert tuple(paper.dataset.crop_area_range) == (0.08, 1.0)
  # An argument still replaces the recipe's value; the lr stays given at the recipe's batch.
  small = imagenet.get_config('model=se_mobilenet_v1,recipe=mobile,batch=64')
  assert (small.batch_size, small.lr_reference_batch) == (64, 256)
  with pytest.raises(ValueError, match='recipe'):
    imagenet.get_config('recipe=fast')


def test_every_run_has_its_paper_row_and_its_twin():
  sweep = _sweep()
  models = [o['model.name'] for o in sweep.SWEEP]
  assert len(models) == len(set(models)) == 20
  for name in models:
    row = paper_tables23.find({'model.name': name})
    assert row is not None, name
    if name.startswith('se_'):
      assert targets.plain_twin(name) in models
      plain = paper_tables23.find({'model.name': targets.plain_twin(name)})
      # SE lowers the error and adds little cost (Tables 2 and 3).
      assert row.top1 < plain.top1 and row.gflops - plain.gflops <= 0.02 + 1e-9


def test_runs_take_their_recipe_from_the_config():
  for overrides in _sweep().SWEEP:
    name = overrides['model.name']
    if 'inception_resnet' in name:
      assert overrides == {
          'model.name': name,
          'dataset.image_size': 299,
          'dataset.eval_resize': 352
      }
    elif name in paper_tables23.MOBILE:
      mobile = imagenet.RECIPES['mobile']
      assert overrides['batch_size'] == mobile['batch']
      assert overrides['optimizer.weight_decay'] == mobile['weight_decay']
      assert overrides['dataset.crop_area_range'] == imagenet.CROP_AREA_RANGES['mobile']
    else:
      assert overrides == {'model.name': name}


def test_plan_validates_every_run_and_prints_its_command(tmp_path):
  plan = runs.plan(SWEEP_FILE, str(tmp_path))
  assert not plan.dropped and len(plan.runs) == 20
  assert plan.tables == ('Table 2', 'Table 3')
  by_model = {r.config.model.name: r for r in plan.runs}
  irv2 = by_model['se_inception_resnet_v2']
  assert irv2.config.dataset.image_size == 299
  assert '--config.dataset.image_size=299' in irv2.command()
  mobile = by_model['se_shufflenet_v1_g3'].config
  assert (mobile.batch_size, mobile.optimizer.weight_decay) == (256, 4e-5)
  assert by_model['vgg16_bn'].config.batch_size == 1024


def test_other_data_sets_keep_the_resnet_pair(tmp_path):
  plan = runs.plan(SWEEP_FILE, str(tmp_path), dataset='cifar10', validate=False)
  assert sorted(r.config.model.name for r in plan.runs) == ['cifar_resnet56', 'se_cifar_resnet56']
  assert len(plan.dropped) == 18


def _reference_rows():
  """{label: (re-implemented top-1, top-5, GFLOPs, SE top-1, top-5, SE GFLOPs)} of the README."""
  with open(REFERENCE) as f:
    text = f.read()
  rows = {}
  table2 = text.split('single 224 crop, error % (Table 2)', 1)[1].split('\n\n', 2)[1]
  for line in table2.splitlines():
    m = re.match(
        r'\| (ResNe\S+) \| ([\d.]+) / ([\d.]+) \| ([\d.]+) / ([\d.]+) \| '
        r'([\d.]+) / ([\d.]+) \|', line)
    if m:
      p1, p5, s1, s5, g, sg = (float(v) for v in m.groups()[1:])
      rows[m.group(1)] = (p1, p5, g, s1, s5, sg)
  others = text.split('## Other backbones of the paper', 1)[1]
  for line in others.splitlines():
    m = re.match(
        r'\| ([^|(]+?)[ (][^|]*\| [^|]* \| ([\d.]+) / ([\d.]+) \| ([\d.]+) \| '
        r'([\d.]+) / ([\d.]+) \| ([\d.]+) \|', line)
    if m:
      rows[m.group(1).split()[0]] = tuple(float(v) for v in m.groups()[1:])
  return rows


def test_rows_equal_the_reference_tables():
  reference = _reference_rows()
  assert len(reference) == 10
  rows = paper_tables23.ROWS
  for plain, se in zip(rows[::2], rows[1::2]):
    assert (plain.top1, plain.top5, plain.gflops, se.top1, se.top5,
            se.gflops) == reference[plain.label]
  originals = {r.label: r.original for r in rows if r.table == 'Table 3' or 'Incep' in r.label}
  assert originals == {
      'BN-Inception': (25.2, 7.82),
      'SE-BN-Inception': None,
      'Inception-ResNet-v2': (19.9, 4.9),
      'SE-Inception-ResNet-v2': None,
      'MobileNet': (29.4, None),
      'SE-MobileNet': None,
      'ShuffleNet': (32.6, None),
      'SE-ShuffleNet': None
  }
