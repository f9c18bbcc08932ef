"""config.model.surgery: the config field through which main.py trains a surgery-made network.

`models.from_config` is the one way from a config to a network, so the
upfront check, training, checkpoints, `--mode=summary` and `--mode=analyze`
all get the SE blocks from it; a sweep file sets the fields like any other.
"""

import jax
import jax.numpy as jnp
import pytest

from configs import digits
from configs import surgery_digits
from experiments import runs
from se_flax import check
from se_flax import config_lib
from se_flax import models
from se_flax import surgery
from se_flax.analysis import gates as gates_lib
from se_flax.errors import ConfigError
from se_flax.layers.se import SESpec
from tests.surgery import checks

X = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)


def config(where='residual', **fields):
  c = digits.get_config('model=cifar_resnet20,r=4')
  c.model.surgery.where = where
  for key, value in fields.items():
    c.model.surgery[key] = value
  return c


def params(model):
  return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), X)['params']


def test_from_config_puts_the_blocks_into_the_plain_preset():
  model = models.from_config(config(), 10)
  assert isinstance(model, surgery.WithSE)
  # The paper's place in the CIFAR ResNet's basic units: after bn2, three units per stage.
  assert [s[1] for s in model.sites] == ['bn2'] * 9
  plain = models.from_config(config(where=''), 10)
  assert not isinstance(plain, surgery.WithSE)
  added = sum(
      checks.se_block_params(SESpec(reduction=4), c) for c in [16] * 3 + [32] * 3 + [64] * 3)
  assert checks.count(params(model)) - checks.count(params(plain)) == added
  convs = models.from_config(config('convs', min_channels=64), 10)
  assert len(convs.sites) == 6 and all(s[0].startswith('layer3') for s in convs.sites)


def test_the_upfront_check_and_the_summary_see_the_blocks():
  c = config('convs', min_channels=32)
  check.check_config(c, num_devices=1, num_processes=1)
  text = check.describe(c)
  plain = check.describe(config(where=''))
  total = lambda t: int(
      next(line for line in t.splitlines() if line.startswith('total')).split()[1].replace(',', ''))
  # Six convs 32 wide (layer2) and six 64 wide (layer3); the CIFAR shortcuts have none.
  block = lambda c: checks.se_block_params(SESpec(reduction=4), c)
  assert total(text) - total(plain) == 6 * block(32) + 6 * block(64)
  assert 'SE: SESpec(reduction=4' in text


def test_the_analysis_reads_the_gates():
  model = models.from_config(config(), 10)
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, train=False))(jnp.zeros(
      X.shape))
  gates = gates_lib.make_gate_fn(model)(variables, jnp.zeros((2, 8, 8, 1)))
  assert list(gates)[:2] == ['layer1_0/bn2', 'layer1_1/bn2'] and len(gates) == 9


def test_configs_surgery_cannot_take():
  c = config()
  c.model.name = 'se_cifar_resnet20'
  with pytest.raises(ConfigError, match="has its own: use config.model.name='cifar_resnet20'"):
    models.from_config(c, 10)
  with pytest.raises(ConfigError, match="config.model.surgery.where='all'"):
    models.from_config(config('all'), 10)
  with pytest.raises(ConfigError, match='puts no SE block into'):
    models.from_config(config('convs', min_channels=128), 10)
  c = config()
  c.model.se.stages = (0,)
  with pytest.raises(ConfigError, match='config.model.se.stages=\\(0,\\) places the blocks'):
    models.from_config(c, 10)


def test_the_se_fields_change_the_network_only_with_surgery():
  on, other = config(), config()
  other.model.se.reduction = 8
  diffs = config_lib.differences(config_lib.as_json(on), config_lib.as_json(other))
  assert [d[0] for d in models.architecture_differences(diffs, on, other)] == ['model.se.reduction']
  off, other = config(where=''), config(where='')
  other.model.se.reduction = 8
  diffs = config_lib.differences(config_lib.as_json(off), config_lib.as_json(other))
  assert models.architecture_differences(diffs, config_lib.as_json(off),
                                         config_lib.as_json(other)) == []


def test_the_fine_tuning_config():
  c = surgery_digits.get_config('where=convs,min_channels=32,epochs=2')
  assert (c.model.name, c.model.surgery.where, c.model.surgery.min_channels) == ('cifar_resnet20',
                                                                                 'convs', 32)
  assert c.model.surgery.identity_start and c.learning_rate == 0.01
  check.check_config(c, num_devices=1, num_processes=1)


def test_a_sweep_file_sets_rule_bound_and_ratio():
  plan = runs.plan('experiments/surgery.py', '/tmp/unused', 'digits')
  assert [r.config.model.surgery.where for r in plan.runs] == ['residual'] * 3 + ['convs'] * 3
  assert [r.config.model.surgery.min_channels for r in plan.runs][3:] == [16, 32, 64]
  assert [r.config.model.se.reduction for r in plan.runs][:3] == [4, 4, 8]
  assert not plan.dropped
