"""A workdir holding another run's checkpoints: an error that lists the differing config fields."""

import pytest

from configs import digits
from se_flax import config_lib
from se_flax import models
from tests.integration import harness


@pytest.mark.parametrize(
    'flag, field, stored, now',
    [
        # Other shapes: the SE blocks add parameters.
        ('--config.model.name=se_cifar_resnet20', 'model.name', "'cifar_resnet20'",
         "'se_cifar_resnet20'"),
        # The same shapes, another network.
        ('--config.model.bn_epsilon=0.001', 'model.bn_epsilon', '1e-05', '0.001'),
    ])
def test_checkpoint_of_another_model(reference_run, digits_run, tmp_path, flag, field, stored, now):
  workdir = harness.copy_run(reference_run, tmp_path / 'run')
  code, out, err = digits_run(flag, workdir=workdir)
  assert code == 2, harness.describe(code, out, err)
  assert 'holds checkpoint step 20 of a different run' in err
  assert f'config.{field}: {stored} in the checkpoint, {now} now' in err
  assert 'Use a new --workdir' in err and 'Traceback' not in err
  assert harness.checkpoint_steps(workdir) == harness.checkpoint_steps(reference_run)


def _digits(**changes):
  config = digits.get_config()
  for key, value in changes.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def test_config_differences():
  stored = config_lib.as_json(_digits())
  current = _digits(**{'model.se.reduction': 8, 'num_train_steps': 50, 'model.dtype': 'bfloat16'})
  differences = config_lib.differences(stored, current)
  assert differences == [('model.dtype', 'float32', 'bfloat16'), ('model.se.reduction', 4, 8),
                         ('num_train_steps', -1, 50)]
  # Longer training and another compute dtype resume; another SE block does not.
  assert models.architecture_differences(differences, stored,
                                         current) == [('model.se.reduction', 4, 8)]
  # A plain backbone has no SE block for the SE fields to change.
  plain = config_lib.as_json(_digits(**{'model.name': 'cifar_resnet20'}))
  plain_current = _digits(**{'model.name': 'cifar_resnet20', 'model.se.reduction': 8})
  assert models.architecture_differences(config_lib.differences(plain, plain_current), plain,
                                         plain_current) == []
  text = config_lib.format_differences(differences)
  assert "config.model.dtype: 'float32' in the checkpoint, 'bfloat16' now" in text
