"""config -> the network: models.from_config, with the layout of imported weights (init_from)."""

import json

import jax.numpy as jnp
import pytest

from configs import default
from se_flax import models
from se_flax.errors import ConfigError
from se_flax.layers.se import SESpec


def model_config(**changes):
  config = default.get_base_config()
  for key, value in changes.items():
    node = config.model
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def test_the_config_sets_name_spec_and_attributes():
  cfg = model_config(
      **{
          'name': 'se_cifar_resnet20',
          'dtype': 'bfloat16',
          'bn_momentum': 0.99,
          'se.reduction': 8,
          'se.stages': (1, 2)
      })
  cfg.bn_group_size = 4
  model = models.from_config(cfg, 10)
  assert model.se == SESpec(reduction=8, stages=(1, 2))
  assert (model.num_classes, model.dtype, model.bn_momentum,
          model.bn_group_size) == (10, jnp.bfloat16, 0.99, 4)
  # stride_in_1x1=None keeps the preset's; the CIFAR networks have no such field.
  assert models.from_config(model_config(name='se_resnet50'), 10).stride_in_1x1 is True
  assert models.from_config(model_config(name='se_resnet50', stride_in_1x1=False),
                            10).stride_in_1x1 is False


def test_a_plain_backbone_ignores_the_se_fields():
  cfg = model_config(**{'name': 'cifar_resnet20', 'se.gate': 'swish'})
  model = models.from_config(cfg, 10)
  assert model.se is None


@pytest.mark.parametrize('changes, words', [
    ({
        'name': 'se_resnet51'
    }, ["config.model.name='se_resnet51'", 'se_resnet50']),
    ({
        'dtype': 'float8'
    }, ["config.model.dtype='float8'", "'bfloat16'"]),
    ({
        'se.gate': 'swish'
    }, ["config.model.se.gate='swish'", "'sigmoid'"]),
    ({
        'se.reduction': 0
    }, ['config.model.se.reduction=0', 'positive integer']),
    ({
        'bn_momentum': 1.0
    }, ['config.model.bn_momentum=1.0', '[0, 1)']),
    ({
        'bn_epsilon': 0.0
    }, ['config.model.bn_epsilon=0.0', 'positive']),
])
def test_bad_values_are_config_errors(changes, words):
  with pytest.raises(ConfigError) as info:
    models.from_config(model_config(**changes), 10)
  for word in words:
    assert word in str(info.value)


def test_a_stored_architecture_replaces_the_layout_but_not_the_arithmetic(tmp_path):
  cfg = model_config(
      **{
          'name': 'se_resnet18',
          'dtype': 'bfloat16',
          'bn_momentum': 0.5,
          'bn_epsilon': 1e-3,
          'se.reduction': 4
      })
  stored = {
      'stage_sizes': [1, 1, 1, 1],
      'stem_pool': 'ceil',
      'se': {
          'reduction': 8
      },
      'dtype': 'float32',
      'bn_momentum': 0.9
  }
  cfg.bn_group_size = 2
  cfg.init_from = _imported(tmp_path, {
      'model': 'se_resnet18',
      'num_classes': 1000,
      'overrides': stored
  })
  model = models.from_config(cfg, 7)
  assert (model.stage_sizes, model.stem_pool, model.se) == ((1, 1, 1, 1), 'ceil',
                                                            SESpec(reduction=8))
  # The weights' layout keeps its own epsilon (here the preset's); the run sets the rest.
  assert (model.bn_epsilon, model.dtype, model.bn_momentum,
          model.bn_group_size) == (1e-5, jnp.bfloat16, 0.5, 2)


def _imported(tmp_path, meta):
  (tmp_path / 'variables').mkdir()
  (tmp_path / 'model.json').write_text(json.dumps(meta))
  return str(tmp_path)


def test_the_imported_layout_is_read_from_model_json(tmp_path):
  config = default.get_base_config()
  config.model.name = 'se_cifar_resnet20'
  assert models.from_config(config, 10).se == SESpec()
  config.init_from = _imported(tmp_path, {
      'model': 'se_cifar_resnet20',
      'num_classes': 1000,
      'overrides': {
          'se': {
              'reduction': 2
          }
      }
  })
  assert models.from_config(config, 10).se == SESpec(reduction=2)


def test_weights_of_another_model_are_refused(tmp_path):
  config = default.get_base_config()
  config.model.name = 'se_cifar_resnet20'
  config.init_from = _imported(tmp_path, {'model': 'cifar_resnet20', 'num_classes': 10})
  with pytest.raises(
      ConfigError, match="holds 'cifar_resnet20' weights; set "
      "config.model.name='cifar_resnet20'"):
    models.from_config(config, 10)
  config.init_from = str(tmp_path / 'nothing')
  with pytest.raises(ConfigError, match='is not an imported-weights directory'):
    models.from_config(config, 10)


def test_float16_is_refused_with_a_pointer_to_bfloat16():
  config = default.get_base_config()
  config.model.name = 'se_cifar_resnet20'
  config.model.dtype = 'float16'
  with pytest.raises(ConfigError, match=r"float16.*loss scaling.*'bfloat16'"):
    models.from_config(config, 10)
