"""The name mapping: complete for every supported timm model, strict about every tensor."""

import functools
import json

import numpy as np
import pytest

from se_flax.convert import importer
from se_flax.convert import loaders
from se_flax.convert import mapping
from se_flax.convert import timm_names
from tests.convert import fixtures_lib

# Published by timm 1.0.31 (experiments/paper_reference.md, "timm 1.0.31 model sizes").
PUBLISHED_PARAMS = {
    'resnet18': 11_689_512, 'resnet34': 21_797_672, 'resnet50': 25_557_032,
    'resnet101': 44_549_160, 'resnet152': 60_192_808,
    'seresnet18': 11_779_624, 'seresnet34': 21_960_416, 'seresnet50': 28_088_024,
    'seresnet101': 49_326_872, 'seresnet152': 66_821_848,
    'resnext50_32x4d': 25_028_904, 'resnext101_32x4d': 44_177_704,
    'seresnext50_32x4d': 27_559_896, 'seresnext101_32x4d': 48_955_416,
    'legacy_seresnet18': 11_778_592, 'legacy_seresnet50': 28_088_024,
    'legacy_seresnet101': 49_326_872, 'legacy_seresnet152': 66_821_848,
    'legacy_seresnext50_32x4d': 27_559_896, 'legacy_seresnext101_32x4d': 48_955_416,
    'legacy_senet154': 115_088_984,
}


@functools.lru_cache(maxsize=None)
def _plan(timm_name):
  return importer.plan_for(timm_name)


def _param_count(plan):
  # timm counts parameters (weights, biases, BN affine), not buffers (running stats).
  return sum(int(np.prod(e.source_shape)) for e in plan.entries if e.target[0] == 'params')


def _small_state_dict(timm_name='seresnet18'):
  shapes = importer.expected_state_dict_shapes(timm_name, num_classes=10, stage_sizes=(1, 1, 1, 1))
  return {k: np.zeros(s, np.int64 if k.endswith('num_batches_tracked') else np.float32)
          for k, s in shapes.items()}


@pytest.mark.parametrize('timm_name', sorted(timm_names.TIMM_MODELS))
def test_mapping_accounts_for_every_timm_parameter(timm_name):
  plan = _plan(timm_name)
  count = _param_count(plan)
  assert count == fixtures_lib.timm_state_dicts()['param_counts'][timm_name]
  if timm_name in PUBLISHED_PARAMS:
    assert count == PUBLISHED_PARAMS[timm_name]
  # One PyTorch tensor per planned entry: no two of our leaves read the same tensor.
  keys = [k for k, _ in plan.layout]
  assert len(keys) == len(set(keys))


@pytest.mark.parametrize('timm_name', ['seresnet50', 'legacy_senet154'])
def test_mapping_reproduces_timm_state_dict(timm_name):
  # Keys and shapes of timm's own state dict, num_batches_tracked included (shape ()).
  real = fixtures_lib.timm_state_dicts()['state_dicts'][timm_name]
  ours = _plan(timm_name).source_shapes()
  assert len(ours) == len(real)
  assert ours == {k: tuple(s) for k, s in real}


def test_error_lists_every_problem():
  state_dict = _small_state_dict()
  del state_dict['layer2.0.conv1.weight']
  del state_dict['layer4.0.se.fc2.bias']
  state_dict['layer1.0.extra.weight'] = np.zeros(3, np.float32)
  state_dict['head.weight'] = np.zeros((10, 512), np.float32)
  state_dict['fc.weight'] = np.zeros((10, 256), np.float32)
  state_dict['layer3.0.bn1.running_var'] = np.ones(7, np.float32)
  with pytest.raises(mapping.MappingError) as info:
    importer.convert_state_dict(state_dict, 'seresnet18', stage_sizes=(1, 1, 1, 1))
  error = info.value
  assert [k for k, _ in error.missing] == ['layer2.0.conv1.weight', 'layer4.0.se.fc2.bias']
  assert sorted(k for k, _ in error.unexpected) == ['head.weight', 'layer1.0.extra.weight']
  assert sorted(error.misshaped) == [('fc.weight', (10, 256), (10, 512)),
                                     ('layer3.0.bn1.running_var', (7,), (256,))]
  message = str(error)
  assert '2 missing, 2 unexpected, 2 mis-shaped' in message
  for key in ('layer2.0.conv1.weight', 'layer4.0.se.fc2.bias', 'layer1.0.extra.weight',
              'head.weight', 'fc.weight', 'layer3.0.bn1.running_var'):
    assert key in message


def test_num_batches_tracked_is_optional_but_checked():
  state_dict = _small_state_dict()
  stripped = {k: v for k, v in state_dict.items() if not k.endswith('num_batches_tracked')}
  variables, _ = importer.convert_state_dict(stripped, 'seresnet18', stage_sizes=(1, 1, 1, 1))
  assert variables['batch_stats']['bn1']['var'].shape == (64,)
  state_dict['bn1.num_batches_tracked'] = np.zeros(3, np.int64)
  with pytest.raises(mapping.MappingError, match='bn1.num_batches_tracked'):
    importer.convert_state_dict(state_dict, 'seresnet18', stage_sizes=(1, 1, 1, 1))


def test_layouts_convert():
  state_dict = _small_state_dict()
  conv = np.arange(64 * 3 * 7 * 7, dtype=np.float32).reshape(64, 3, 7, 7)
  se = np.arange(8 * 64, dtype=np.float32).reshape(8, 64, 1, 1)
  head = np.arange(10 * 512, dtype=np.float32).reshape(10, 512)
  state_dict.update({'conv1.weight': conv, 'layer1.0.se.fc1.weight': se, 'fc.weight': head})
  variables, _ = importer.convert_state_dict(state_dict, 'seresnet18', stage_sizes=(1, 1, 1, 1))
  params = variables['params']
  np.testing.assert_array_equal(params['conv1']['kernel'], conv.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params['layer1_0']['se']['fc1']['kernel'], se[:, :, 0, 0].T)
  np.testing.assert_array_equal(params['fc']['kernel'], head.T)


def test_wrong_family_gets_a_hint():
  legacy = _small_state_dict('legacy_seresnet50')
  with pytest.raises(mapping.MappingError, match='legacy_'):
    importer.convert_state_dict(legacy, 'seresnet50', stage_sizes=(1, 1, 1, 1))


def test_resolve_names():
  assert timm_names.resolve(None, 'seresnet50') == ('se_resnet50', 'seresnet50')
  assert timm_names.resolve('se_resnet50', None) == ('se_resnet50', 'seresnet50')
  assert timm_names.resolve('senet154', None) == ('senet154', 'legacy_senet154')
  assert timm_names.resolve('se_resnet50', 'legacy_seresnet50') == ('se_resnet50',
                                                                    'legacy_seresnet50')
  with pytest.raises(ValueError, match='does not match'):
    timm_names.resolve('resnet50', 'seresnet50')
  with pytest.raises(ValueError, match='not supported'):
    timm_names.resolve(None, 'seresnet26d')
  with pytest.raises(ValueError, match='no timm source'):
    timm_names.resolve('cifar_resnet20', None)


def test_safetensors_bfloat16(tmp_path):
  # A hand-written file: safetensors' numpy backend cannot represent bfloat16 itself.
  values = np.array([[1.0, -2.5], [0.15625, 3.0]], np.float32)
  raw = (values.view(np.uint32) >> 16).astype('<u2').tobytes()   # exact: few mantissa bits
  header = json.dumps({'w': {'dtype': 'BF16', 'shape': [2, 2], 'data_offsets': [0, len(raw)]}})
  header = header.encode() + b' ' * (-len(header) % 8)
  path = tmp_path / 'bf16.safetensors'
  path.write_bytes(len(header).to_bytes(8, 'little') + header + raw)
  loaded = loaders.load_state_dict(path)
  assert loaded['w'].dtype == np.float32
  np.testing.assert_array_equal(loaded['w'], values)


def test_pickle_without_torch_names_the_fix(tmp_path, monkeypatch):
  path = tmp_path / 'model.pth'
  path.write_bytes(b'not read')
  monkeypatch.setitem(__import__('sys').modules, 'torch', None)   # import torch -> ImportError
  with pytest.raises(loaders.LoaderError, match='requirements-torch.txt'):
    loaders.load_state_dict(path)


def test_unknown_suffix(tmp_path):
  path = tmp_path / 'model.npz'
  path.write_bytes(b'')
  with pytest.raises(loaders.LoaderError, match='allowed suffixes'):
    loaders.load_state_dict(path)
