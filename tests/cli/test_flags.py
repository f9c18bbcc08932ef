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


def _error(*args):
  with pytest.raises(errors.ConfigError) as info:
    _parse(*args)
  assert '\n' not in str(info.value)
  return str(info.value)


def test_a_config_file_that_fails_is_named_with_its_own_error(tmp_path):
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config():\n  return undefined_name\n')
  plain = tmp_path / 'plain.py'
  plain.write_text('def get_config():\n  return {"seed": 1}\n')
  for override in ((), ('--config.seed=2',)):
    fv = flags.FlagValues()
    holder = se_flags.define_config_flag('Config file.', flag_values=fv)
    with pytest.raises(errors.ConfigError, match=f"^--config={broken}: name 'undefined_name'"):
      se_flags.parse(['main.py', f'--config={broken}', *override], holder, flag_values=fv)
    fv = flags.FlagValues()
    holder = se_flags.define_config_flag('Config file.', flag_values=fv)
    with pytest.raises(errors.ConfigError, match='get_config.. returned dict, not a ConfigDict'):
      se_flags.parse(['main.py', f'--config={plain}', *override], holder, flag_values=fv)


def test_a_group_cannot_be_none():
  assert _error('--config.model=None').startswith(
      '--config.model=None: config.model is a group of fields (')


def test_none_in_a_flag_file(tmp_path):
  flag_file = tmp_path / 'flags.txt'
  flag_file.write_text('--config.init_from=None\n--config.model.se.stages=None\n')
  config = _parse(f'--flagfile={flag_file}')
  assert config.init_from is None and config.model.se.stages is None
