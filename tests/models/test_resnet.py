"""ImageNet backbone layout: where the stride goes, the stems and their pooling."""

import jax
import jax.numpy as jnp
import pytest

from se_flax.models import registry
from tests.models.model_shapes import params_of


@pytest.mark.parametrize('name,stride_in_1x1', [
    # The paper's (Caffe) ResNets stride the first 1x1 conv; the ResNeXt and SENet-154 models
    # stride the 3x3 conv, as their published code does.
    ('resnet50', True), ('resnet101', True), ('resnet152', True),
    ('se_resnet50', True), ('resnext50_32x4d', False), ('se_resnext101_32x4d', False),
    ('senet154', False)])
def test_preset_stride_position(name, stride_in_1x1):
  assert registry.create_model(name, 10).stride_in_1x1 is stride_in_1x1


def test_resnext_32x4d_widths():
  params = params_of('resnext50_32x4d')
  # Stage widths 128, 256, 512, 1024 = 32 groups of 4, 8, 16, 32 channels.
  for stage, per_group in ((1, 4), (2, 8), (3, 16), (4, 32)):
    assert params[f'layer{stage}_1']['conv2']['kernel'].shape == (3, 3, per_group, 32 * per_group)
    assert params[f'layer{stage}_1']['conv3']['kernel'].shape[-1] == 256 * 2 ** (stage - 1)


def stage1_size(model, hw):
  x = jax.ShapeDtypeStruct((1, hw, hw, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  _, state = jax.eval_shape(lambda v, x: model.apply(v, x, capture_intermediates=True,
                                                     mutable=['intermediates']), variables, x)
  return state['intermediates']['layer1_0']['__call__'][0].shape[1]


@pytest.mark.parametrize('hw,expected', [(56, 14), (58, 14), (60, 15), (224, 56)])
def test_caffe_ceil_mode_pooling(hw, expected):
  # SENet-154's 3x3/2 stem conv gives ceil(hw / 2); Caffe's unpadded 3x3/2 max-pool in ceil mode
  # then gives ceil((n - 3) / 2) + 1.
  model = registry.builder('senet154')(stage_sizes=(1, 1, 1, 1), num_classes=10)
  assert stage1_size(model, hw) == expected


@pytest.mark.parametrize('hw,expected', [(56, 14), (58, 15), (224, 56)])
def test_torchvision_padded_pooling(hw, expected):
  # 7x7/2 conv padded 3, then a 3x3/2 max-pool padded 1: floor((n - 1) / 2) + 1 each.
  model = registry.builder('resnet18')(stage_sizes=(1, 1, 1, 1), num_classes=10)
  assert stage1_size(model, hw) == expected
