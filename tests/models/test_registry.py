"""create_model: presets, overrides, and errors that name what went wrong."""

import jax
import jax.numpy as jnp
import pytest

from se_flax.layers.se import SESpec
from se_flax.models import registry
from se_flax.models.cifar import CifarResNet
from se_flax.models.resnet import ResNet
from tests.models.model_shapes import builder


def init_shapes(model, shape=(1, 32, 32, 3)):
  return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x),
                        jax.ShapeDtypeStruct(shape, jnp.float32))


def test_every_plain_model_has_an_se_twin():
  names = set(registry.list_models())
  plain = {n for n in names if not registry.has_se(n)}
  assert plain == {
      'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'resnext50_32x4d',
      'resnext101_32x4d', 'senet154_plain', 'cifar_resnet20', 'cifar_resnet32', 'cifar_resnet44',
      'cifar_resnet56', 'cifar_resnet110', 'preact_resnet164', 'wrn16_8', 'vgg16_bn',
      'bn_inception', 'inception_resnet_v2', 'mobilenet_v1', 'shufflenet_v1_g3'
  }
  twins = {'senet154' if n == 'senet154_plain' else f'se_{n}' for n in plain}
  assert names == plain | twins
  assert registry.list_models() == sorted(names)


def test_se_presets_default_to_the_papers_block_and_plain_ones_have_none():
  assert registry.create_model('se_resnet50', 10).se == SESpec()
  assert registry.create_model('resnet50', 10).se is None
  assert registry.create_model('resnet50', 10, se=SESpec(reduction=4)).se is None


def test_se_spec_may_be_a_mapping():
  model = registry.create_model('se_cifar_resnet20', 10, se={'reduction': 8, 'stages': [2]})
  assert model.se == SESpec(reduction=8, stages=(2,))


def test_overrides_reach_the_backbone():
  model = registry.create_model('se_resnet50', 7, dtype='bfloat16', bn_momentum=0.99,
                                stride_in_1x1=False, zero_init_residual=False)
  assert isinstance(model, ResNet)
  assert (model.num_classes, model.dtype, model.bn_momentum, model.stride_in_1x1,
          model.zero_init_residual) == (7, jnp.bfloat16, 0.99, False, False)
  cifar = registry.create_model('wrn16_8', 10, bn_group_size=4)
  assert isinstance(cifar, CifarResNet) and cifar.bn_group_size == 4 and cifar.widen == 8


def test_builder_returns_the_preset_partial():
  model = builder('resnext50_32x4d')(num_classes=3)
  assert (model.groups, model.base_width, model.stage_sizes) == (32, 4, (3, 4, 6, 3))


def test_unknown_model_lists_the_known_ones():
  with pytest.raises(ValueError) as info:
    registry.create_model('se_resnet51', 10)
  message = str(info.value)
  assert 'config.model.name' in message and "'se_resnet51'" in message
  for name in registry.list_models():
    assert repr(name) in message


def test_unknown_override_is_named_with_the_allowed_ones():
  with pytest.raises(ValueError) as info:
    registry.create_model('se_resnet50', 10, bn_momentun=0.9)
  message = str(info.value)
  assert "'bn_momentun'" in message and "'bn_momentum'" in message and "'dtype'" in message


def test_cifar_only_override_is_rejected_for_imagenet_models():
  with pytest.raises(ValueError, match="'widen'"):
    registry.create_model('resnet18', 10, widen=2)


@pytest.mark.parametrize('num_classes', [0, -3, 2.0])
def test_num_classes_must_be_a_positive_integer(num_classes):
  with pytest.raises(ValueError, match='num_classes'):
    registry.create_model('resnet18', num_classes)


def test_unknown_dtype_names_the_allowed_ones():
  with pytest.raises(ValueError, match=r"config\.model\.dtype='float64'.*'bfloat16'"):
    registry.create_model('resnet18', 10, dtype='float64')


@pytest.mark.parametrize('name,stages,allowed', [
    ('se_resnet18', (4,), '0..3'),
    ('se_resnext50_32x4d', (0, 5), '0..3'),
    ('se_cifar_resnet20', (3,), '0..2'),
    ('se_wrn16_8', (1, 3), '0..2'),
])
def test_stage_index_out_of_range_raises_at_init(name, stages, allowed):
  model = registry.create_model(name, 10, se=SESpec(stages=stages))
  with pytest.raises(ValueError, match=r'config\.model\.se\.stages') as info:
    init_shapes(model)
  assert allowed in str(info.value)


def test_last_valid_stage_index_is_accepted():
  init_shapes(registry.create_model('se_cifar_resnet20', 10, se=SESpec(stages=(2,))))


def test_reduction_larger_than_a_blocks_channels_raises_at_init():
  # CIFAR ResNet-20's first stage has 16 channels.
  model = registry.create_model('se_cifar_resnet20', 10, se=SESpec(reduction=32))
  with pytest.raises(ValueError, match=r'reduction=32.*16 channels'):
    init_shapes(model)
  # Restricted to the 64-channel stage, r=32 fits.
  init_shapes(registry.create_model('se_cifar_resnet20', 10, se=SESpec(reduction=32, stages=(2,))))


@pytest.mark.parametrize('depth,kind', [(21, 'basic'), (165, 'preact_bottleneck'), (15, 'wide')])
def test_cifar_depth_that_fits_no_network_raises(depth, kind):
  with pytest.raises(ValueError, match=f'depth {depth}'):
    init_shapes(CifarResNet(depth=depth, kind=kind, num_classes=10))
