"""The registries through which a user adds a squeeze or an excitation of their own."""

import pytest

from se_flax.layers import excite as excite_lib
from se_flax.layers import squeeze as squeeze_lib
from se_flax.layers.se import SESpec


@pytest.fixture
def registered():
  """Names registered by a test, removed from every registry afterwards."""
  names = []
  yield names
  for name in names:
    squeeze_lib.SQUEEZES.pop(name, None)
    excite_lib.EXCITATIONS.pop(name, None)
    excite_lib.REDUCING.discard(name)


def test_a_registered_squeeze_emits_one_descriptor_per_channel_by_default(registered):
  registered += ['user_mean', 'user_two']

  @squeeze_lib.register('user_mean')
  def user_mean(x, spec, module):
    del spec, module
    return x.mean(axis=(1, 2), keepdims=True)

  @squeeze_lib.register('user_two', width_factor=2)
  def user_two(x, spec, module):
    del spec, module
    return x

  assert squeeze_lib.SQUEEZES['user_mean'] == squeeze_lib.SqueezeOp(user_mean, 1)
  assert squeeze_lib.SQUEEZES['user_two'] == squeeze_lib.SqueezeOp(user_two, 2)
  # The spec accepts the new name, and knows its width: ECA maps channels to themselves.
  assert SESpec(squeeze='user_mean', excite='eca').squeeze == 'user_mean'
  with pytest.raises(ValueError, match="cannot take squeeze='user_two', which emits 2"):
    SESpec(squeeze='user_two', excite='eca')


def test_a_registered_excitation_has_no_bottleneck_unless_it_says_so(registered):
  registered += ['user_plain', 'user_bottleneck']

  @excite_lib.register('user_plain')
  def user_plain(z, channels, reduced, spec, module):
    del channels, reduced, spec, module
    return z

  @excite_lib.register('user_bottleneck', reduces=True)
  def user_bottleneck(z, channels, reduced, spec, module):
    del channels, reduced, spec, module
    return z

  assert excite_lib.EXCITATIONS['user_plain'] is user_plain
  assert excite_lib.EXCITATIONS['user_bottleneck'] is user_bottleneck
  assert 'user_plain' not in excite_lib.REDUCING and 'user_bottleneck' in excite_lib.REDUCING
  assert None not in excite_lib.REDUCING
  assert SESpec(excite='user_bottleneck').excite == 'user_bottleneck'
