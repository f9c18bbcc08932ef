"""se_flax.flags in-process: the config main.py builds from a command line, None included."""

from absl import flags
import pytest

from se_flax import errors
from se_flax import flags as se_flags


def _parse(*args):
  fv = flags.FlagValues()
  holder = se_flags.define_config_flag('Config file.', flag_values=fv)
  se_flags.parse(['main.py', '--config=configs/digits.py', *args], holder, flag_values=fv)
  return holder.value


def test_none_sets_fields_that_may_be_none():
  config = _parse('--config.model.se.stages=(0, 1)', '--config.model.se.stages=None',
                  '--config.init_from=None')
  assert config.model.se.stages is None and config.init_from is None
  assert _parse('--config.model.se.stages=0,2').model.se.stages == (0, 2)
  # A later value replaces a None.
  config = _parse('--config.model.se.stages=None', '--config.model.se.stages=(1,)')
  assert config.model.se.stages == (1,)


def test_none_is_a_name_for_string_fields():
  assert _parse('--config.model.se.squeeze=none').model.se.squeeze == 'none'
  assert _parse('--config.model.se.squeeze=None').model.se.squeeze == 'None'


def test_none_is_refused_for_numbers():
  with pytest.raises(errors.ConfigError, match='config.seed cannot be None; it takes an integer'):
    _parse('--config.seed=None')


def test_overrides_apply_in_order_and_keep_types():
  config = _parse('--config.batch_size=64', '--config.learning_rate=0.5', '--noconfig.keep_best')
  assert (config.batch_size, config.learning_rate, config.keep_best) == (64, 0.5, False)
