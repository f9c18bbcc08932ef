"""configs/imagenet.py's named recipes against the table of docs/recipes.md, value by value.

The table is the published source (each row cites it); the config file is
the code. Every field a recipe changes must be in the table, and every cell
of the table must be what the config sets.
"""

import ast
import pathlib

import pytest

from configs import imagenet
from se_flax import config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARKER = '<!-- recipes-table:'


def read_table():
  """{recipe: {field: value}} from docs/recipes.md's recipe table."""
  lines = (ROOT / 'docs' / 'recipes.md').read_text().splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(MARKER))
  header = [c.strip() for c in lines[start + 1].strip('|').split('|')]
  recipes = header[1:-1]
  table = {r: {} for r in recipes}
  for line in lines[start + 3:]:
    if not line.startswith('|'):
      break
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    field = cells[0].strip('`')
    for recipe, cell in zip(recipes, cells[1:-1]):
      table[recipe][field] = ast.literal_eval(cell)
  return table


TABLE = read_table()


def value_at(config, field):
  node = config
  for part in field.split('.'):
    node = node[part]
  return tuple(node) if isinstance(node, (list, tuple)) else node


def test_the_table_has_the_four_recipes_and_every_row_has_a_source():
  assert list(TABLE) == ['paper', 'rsb_a1', 'rsb_a2', 'rsb_a3']
  lines = (ROOT / 'docs' / 'recipes.md').read_text().splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(MARKER))
  rows = [l for l in lines[start + 3:start + 3 + len(TABLE['paper'])]]
  assert all(l.rstrip('|').rsplit('|', 1)[1].strip() for l in rows)


@pytest.mark.parametrize('recipe', list(TABLE))
def test_the_config_sets_every_value_of_the_table(recipe):
  config = imagenet.get_config(f'model=se_resnet50,recipe={recipe}')
  wrong = {
      field: (value_at(config, field), want)
      for field, want in TABLE[recipe].items()
      if value_at(config, field) != want
  }
  assert not wrong, f'{recipe}: config value, table value: {wrong}'


@pytest.mark.parametrize('recipe', ['rsb_a1', 'rsb_a2', 'rsb_a3'])
def test_every_field_a_recipe_changes_is_in_the_table(recipe):
  paper = imagenet.get_config('model=se_resnet50,recipe=paper')
  config = imagenet.get_config(f'model=se_resnet50,recipe={recipe}')
  changed = {field for field, _, _ in config_lib.differences(paper, config)}
  # The eval batch follows the train batch; the table lists the train batch.
  assert changed - {'eval_batch_size'} <= set(TABLE[recipe])
  assert changed, 'a recipe that changes nothing'


def test_arguments_win_over_the_recipe():
  config = imagenet.get_config('recipe=rsb_a3,batch=256,epochs=10,warmup=1,smoothing=0.1,'
                               'image_size=128')
  # epochs= is the cosine's length, as timm's --epochs: the recipe's 10 cool-down epochs follow.
  assert (config.batch_size, config.num_epochs) == (256, 20.0)
  assert config.schedule.cooldown_epochs == 10.0
  assert (config.schedule.warmup_epochs, config.label_smoothing) == (1.0, 0.1)
  assert config.dataset.image_size == 128 and config.dataset.eval_image_size == 224
  # The rate stays given at the recipe's batch: 8e-3 * sqrt(256 / 2048) when scaled.
  assert (config.learning_rate, config.lr_reference_batch) == (0.008, 2048)
  assert config.lr_scaling == 'sqrt'
  # A batch of one GPU's 512 or less is one BatchNorm and Mixup group.
  assert config.bn_group_size == 0 and config.mix.group_size == 0


def test_cooldown_and_schedule_arguments():
  config = imagenet.get_config('recipe=rsb_a2,epochs=20,cooldown=0')
  assert (config.num_epochs, config.schedule.cooldown_epochs) == (20.0, 0.0)
  config = imagenet.get_config('recipe=rsb_a2,schedule=cosine')
  assert config.schedule.name == 'cosine' and config.schedule.min_lr == 1e-6
  # A step decay reads no warm-up start, floor or cool-down.
  config = imagenet.get_config('recipe=rsb_a2,schedule=step')
  assert (config.schedule.name, config.num_epochs) == ('step', 300.0)
  assert (config.schedule.warmup_lr, config.schedule.min_lr,
          config.schedule.cooldown_epochs) == (0.0, 0.0, 0.0)
  assert imagenet.get_config('recipe=paper,schedule=cosine').schedule.name == 'cosine'


@pytest.mark.parametrize('batch,groups', [(4096, 512), (1024, 512), (512, 0), (256, 0), (1536, 512),
                                          (768, 0)])
def test_bn_and_mix_groups_are_the_gpu_batch_where_it_divides_the_batch(batch, groups):
  config = imagenet.get_config(f'recipe=rsb_a1,batch={batch}')
  assert (config.bn_group_size, config.mix.group_size) == (groups, groups)


@pytest.mark.parametrize('model,stride_in_1x1', [('resnet50', False), ('se_resnext50_32x4d', False),
                                                 ('vgg16_bn', None)])
def test_the_timm_layout_is_set_where_the_network_has_the_option(model, stride_in_1x1):
  assert imagenet.get_config(f'model={model},recipe=rsb_a3').model.stride_in_1x1 is stride_in_1x1
  assert imagenet.get_config(f'model={model}').model.stride_in_1x1 is None


def test_an_unknown_recipe_names_the_known_ones():
  with pytest.raises(ValueError, match=r"recipe='rsb_a4' is unknown; choose one of .*'rsb_a3'"):
    imagenet.get_config('recipe=rsb_a4')
