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
  wrong = {field: (value_at(config, field), want) for field, want in TABLE[recipe].items()
           if value_at(config, field) != want}
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
  assert (config.batch_size, config.num_epochs) == (256, 10.0)
  assert (config.schedule.warmup_epochs, config.label_smoothing) == (1.0, 0.1)
  assert config.dataset.image_size == 128 and config.dataset.eval_image_size == 224
  # The rate stays given at the recipe's batch: 8e-3 * 256 / 2048 when scaled.
  assert (config.learning_rate, config.lr_reference_batch) == (0.008, 2048)


def test_an_unknown_recipe_names_the_known_ones():
  with pytest.raises(ValueError, match=r"recipe='rsb_a4' is unknown; choose one of .*'rsb_a3'"):
    imagenet.get_config('recipe=rsb_a4')
