"""SESpec validation: every bad value names its config field and what is allowed."""

import pytest

from se_flax.layers import excite as excite_lib
from se_flax.layers import squeeze as squeeze_lib
from se_flax.layers.se import SESpec


def error_of(**fields):
  with pytest.raises(ValueError) as info:
    SESpec(**fields)
  return str(info.value)


def test_defaults_are_the_papers_block():
  spec = SESpec()
  assert (spec.reduction, spec.squeeze, spec.excite, spec.gate, spec.integration, spec.position,
          spec.stages) == (16, 'avg', 'fc', 'sigmoid', 'standard', 'last', None)


@pytest.mark.parametrize('value', [0, -4, 2.5, True, '16'])
def test_reduction_must_be_a_positive_integer(value):
  message = error_of(reduction=value)
  assert 'config.model.se.reduction' in message and repr(value) in message


@pytest.mark.parametrize('value', [0, -1])
def test_min_width_must_be_at_least_one(value):
  assert 'config.model.se.min_width' in error_of(min_width=value)


@pytest.mark.parametrize('field,bad,allowed', [
    ('squeeze', 'median', sorted(squeeze_lib.SQUEEZES)),
    ('excite', 'mlp', sorted(excite_lib.EXCITATIONS)),
    ('gate', 'softmax', sorted(excite_lib.GATES)),
    ('integration', 'middle', ['standard', 'pre', 'post', 'identity']),
    ('position', 'first', ['last', '3x3']),
    ('rounding', 'ceil', ['floor', 'multiple8']),
])
def test_unknown_choice_names_field_value_and_allowed_values(field, bad, allowed):
  message = error_of(**{field: bad})
  assert f'config.model.se.{field}' in message
  assert repr(bad) in message
  for name in allowed:
    assert repr(name) in message, (name, message)


def test_gather_extent_outside_the_allowed_set():
  message = error_of(squeeze='gather', gather_extent=3)
  assert 'gather_extent' in message and '[0, 2, 4, 8]' in message


def test_gather_extent_needs_the_gather_squeeze():
  message = error_of(squeeze='avg', gather_extent=2)
  assert 'gather_extent' in message and "'gather'" in message and "'avg'" in message


@pytest.mark.parametrize('integration', ['pre', 'post', 'identity'])
def test_position_3x3_needs_standard_integration(integration):
  message = error_of(position='3x3', integration=integration)
  assert 'position' in message and 'integration' in message and repr(integration) in message


@pytest.mark.parametrize('excite', ['eca', 'identity'])
def test_channelwise_excitations_reject_two_descriptors_per_channel(excite):
  message = error_of(excite=excite, squeeze='meanstd')
  assert 'config.model.se.excite' in message and "'meanstd'" in message


def test_fc_and_ese_accept_meanstd():
  SESpec(squeeze='meanstd')
  SESpec(squeeze='meanstd', excite='ese')


@pytest.mark.parametrize('stages', [(-1,), (0, 'a'), (1.0,)])
def test_stages_must_be_non_negative_indices(stages):
  assert 'config.model.se.stages' in error_of(stages=stages)


def test_check_stages_bounds_indices_by_the_backbone():
  SESpec(stages=(0, 3)).check_placement('ResNet', 4)
  with pytest.raises(ValueError, match=r'stages=\(4,\).*0\.\.3'):
    SESpec(stages=(4,)).check_placement('ResNet', 4)


def test_stages_list_becomes_a_hashable_tuple():
  spec = SESpec(stages=[1, 2])
  assert spec.stages == (1, 2)
  assert hash(spec) == hash(SESpec(stages=(1, 2)))
  assert spec.in_stage(1) and not spec.in_stage(0)
  assert SESpec().in_stage(7)


def test_from_config_builds_a_spec():
  spec = SESpec.from_config({'reduction': 8, 'squeeze': 'max', 'stages': [2]})
  assert spec == SESpec(reduction=8, squeeze='max', stages=(2,))
  assert SESpec.from_config({}) == SESpec()


def test_from_config_rejects_unknown_keys_and_lists_known_ones():
  with pytest.raises(ValueError) as info:
    SESpec.from_config({'reduction': 8, 'ratio': 4})
  message = str(info.value)
  assert "'ratio'" in message and 'config.model.se' in message
  assert "'reduction'" in message and "'squeeze'" in message


def test_from_config_validates_values():
  with pytest.raises(ValueError, match='config.model.se.gate'):
    SESpec.from_config({'gate': 'swish'})


def test_reduction_one_is_allowed():
  # r = 1 keeps the bottleneck as wide as the block; only r < 1 is refused.
  assert SESpec(reduction=1).reduced_width(64) == 64


def test_reduction_message_in_full():
  assert error_of(reduction=0) == ('config.model.se.reduction=0 must be a positive integer '
                                   '(the paper sweeps 2, 4, 8, 16, 32)')


def test_gather_extent_message_in_full():
  assert error_of(squeeze='gather', gather_extent=3) == (
      'config.model.se.gather_extent=3 is not allowed; choose one of [0, 2, 4, 8]')


@pytest.mark.parametrize('position,integration', [('last', 'standard'), ('last', 'pre'),
                                                  ('last', 'post'), ('last', 'identity'),
                                                  ('3x3', 'standard')])
def test_every_integration_at_the_last_position_and_the_standard_one_at_3x3(position, integration):
  # Table 14 varies the integration at the usual position, Table 15 moves the standard block.
  spec = SESpec(position=position, integration=integration)
  assert (spec.position, spec.integration) == (position, integration)


def test_stages_message_in_full():
  assert error_of(stages=(0, -1)) == ('config.model.se.stages=(0, -1) must be a tuple of stage '
                                      'indices (0-based) or None for all stages')
