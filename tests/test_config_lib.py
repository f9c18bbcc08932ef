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
  assert config.optimizer.weight_decay == 0.123          # stored, not the default 1e-4
  assert config.dataset.name == 'digits'                  # stored, not the default imagenet2012
  assert not config_lib.differences(config, {**config_lib.as_json(digits.get_config()),
                                             'optimizer': {**config_lib.as_json(
                                                 digits.get_config())['optimizer'],
                                                           'weight_decay': 0.123}})
