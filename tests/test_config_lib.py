"""config_lib.with_defaults: a config stored before newer fields existed gets their defaults."""

import ml_collections

from configs import default
from configs import digits
from se_flax import config_lib


def test_missing_fields_come_from_the_defaults_and_stored_values_win():
  stored = config_lib.as_json(digits.get_config())
  for group, field in (('mix', None), ('ema', None), ('model', 'drop_path_rate'),
                       ('dataset', 'randaugment'), (None, 'loss')):
    if group is None:
      del stored[field]
    elif field is None:
      del stored[group]
    else:
      del stored[group][field]
  stored['optimizer']['weight_decay'] = 0.123
  config = config_lib.with_defaults(ml_collections.ConfigDict(stored), default.get_base_config())
  base = default.get_base_config()
  assert config.mix == base.mix and config.ema == base.ema and config.loss == 'softmax'
  assert config.model.drop_path_rate == 0.0
  assert config.dataset.randaugment.num_ops == 0
  assert config.optimizer.weight_decay == 0.123  # stored, not the default 1e-4
  assert config.dataset.name == 'digits'  # stored, not the default imagenet2012
  assert not config_lib.differences(
      config, {
          **config_lib.as_json(digits.get_config()), 'optimizer': {
              **config_lib.as_json(digits.get_config())['optimizer'], 'weight_decay': 0.123
          }
      })


def test_eval_without_a_config_fills_the_fields_an_older_checkpoint_lacks(monkeypatch):
  from se_flax import cli  # pylint: disable=g-import-not-at-top
  from se_flax.train import checkpoint  # pylint: disable=g-import-not-at-top
  old = config_lib.as_json(digits.get_config())
  for field in ('mix', 'ema', 'loss', 'bce_target_threshold'):
    del old[field]
  monkeypatch.setattr(checkpoint, 'stored_config', lambda workdir, step:
                      (ml_collections.ConfigDict(old), 7))
  stored = cli._stored_configs('/unused', default.get_base_config())  # pylint: disable=protected-access
  config, step = stored(None)
  assert step == 7
  assert (config.loss, config.ema.decay, config.mix.cutmix_alpha) == ('softmax', 0.0, 0.0)
  assert config.dataset.name == 'digits'
