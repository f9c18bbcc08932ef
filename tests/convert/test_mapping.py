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
    'resnet18': 11_689_512,
    'resnet34': 21_797_672,
    'resnet50': 25_557_032,
    'resnet101': 44_549_160,
    'resnet152': 60_192_808,
    'seresnet18': 11_779_624,
    'seresnet34': 21_960_416,
    'seresnet50': 28_088_024,
    'seresnet101': 49_326_872,
    'seresnet152': 66_821_848,
    'resnext50_32x4d': 25_028_904,
    'resnext101_32x4d': 44_177_704,
    'seresnext50_32x4d': 27_559_896,
    'seresnext101_32x4d': 48_955_416,
    'legacy_seresnet18': 11_778_592,
    'legacy_seresnet50': 28_088_024,
    'legacy_seresnet101': 49_326_872,
    'legacy_seresnet152': 66_821_848,
    'legacy_seresnext50_32x4d': 27_559_896,
    'legacy_seresnext101_32x4d': 48_955_416,
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
  return {
      k: np.zeros(s, np.int64 if k.endswith('num_batches_tracked') else np.float32)
      for k, s in shapes.items()
  }


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
  assert timm_names.resolve('se_resnet50',
                            'legacy_seresnet50') == ('se_resnet50', 'legacy_seresnet50')
  with pytest.raises(ValueError, match='does not match'):
    timm_names.resolve('resnet50', 'seresnet50')
  with pytest.raises(ValueError, match='not supported'):
    timm_names.resolve(None, 'seresnet26d')
  with pytest.raises(ValueError, match='no timm source'):
    timm_names.resolve('cifar_resnet20', None)


def test_safetensors_bfloat16(tmp_path):
  # A hand-written file: safetensors' numpy backend cannot represent bfloat16 itself.
  values = np.array([[1.0, -2.5], [0.15625, 3.0]], np.float32)
  raw = (values.view(np.uint32) >> 16).astype('<u2').tobytes()  # exact: few mantissa bits
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
  monkeypatch.setitem(__import__('sys').modules, 'torch', None)  # import torch -> ImportError
  with pytest.raises(loaders.LoaderError, match='requirements-torch.txt'):
    loaders.load_state_dict(path)


def test_unknown_suffix(tmp_path):
  path = tmp_path / 'model.npz'
  path.write_bytes(b'')
  with pytest.raises(loaders.LoaderError, match='allowed suffixes'):
    loaders.load_state_dict(path)


# ---------------------------------------------------------------- the plan on hand-built modules
# A stem conv, a BatchNorm and a head, as a Flax model holds them (shapes only matter).

RULES = (mapping.Rule('stem', 'conv1', mapping.CONV), mapping.Rule('norm', 'bn1', mapping.BN),
         mapping.Rule('head', 'fc', mapping.LINEAR))


def _variables(**extra):
  variables = {
      'params': {
          'stem': {
              'kernel': np.zeros((7, 7, 3, 8))
          },
          'norm': {
              'scale': np.zeros(8),
              'bias': np.zeros(8)
          },
          'head': {
              'kernel': np.zeros((8, 5)),
              'bias': np.zeros(5)
          }
      },
      'batch_stats': {
          'norm': {
              'mean': np.zeros(8),
              'var': np.zeros(8)
          }
      }
  }
  variables.update(extra)
  return variables


def _torch(plan, dtype=np.float32):
  """A state dict that fits `plan`, every tensor numbered so that layouts can be followed."""
  return {
      key:
          np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) if shape else np.array(
              3, np.int64) for key, shape in plan.layout
  }


def test_plan_lists_torch_shapes_and_the_ignorable_step_counter():
  plan = mapping.make_plan(_variables(), RULES)
  assert plan.source_shapes() == {
      'conv1.weight': (8, 3, 7, 7),
      'bn1.weight': (8,),
      'bn1.bias': (8,),
      'bn1.running_mean': (8,),
      'bn1.running_var': (8,),
      'bn1.num_batches_tracked': (),
      'fc.weight': (5, 8),
      'fc.bias': (5,)
  }
  assert plan.ignored == ('bn1.num_batches_tracked',)


def test_plan_of_params_alone_and_of_a_module_missing_its_first_leaf():
  # No BatchNorm statistics at all, and a BatchNorm without scale (use_scale=False): the leaves
  # after a missing one are still planned.
  variables = _variables()
  del variables['batch_stats']
  del variables['params']['norm']['scale']
  plan = mapping.make_plan(variables, RULES)
  assert [e.source_key for e in plan.entries
         ] == ['conv1.weight', 'bn1.bias', 'fc.weight', 'fc.bias']


def test_plan_refuses_what_it_cannot_map():
  with pytest.raises(ValueError, match=r"collections \['intermediates'\] have no PyTorch"):
    mapping.make_plan(_variables(intermediates={'x': np.zeros(1)}), RULES)
  stray = _variables()
  stray['params']['stem']['bias'] = np.zeros(8)
  lost = _variables(
      params={
          **_variables()['params'], 'extra': {
              'kernel': np.zeros((1, 1))
          },
          'more': {
              'kernel': np.zeros((1, 1))
          }
      })
  with pytest.raises(ValueError) as info:
    mapping.make_plan(stray, RULES)
  assert str(info.value) == ("the name mapping does not cover the model:\n"
                             "  stem: leaves [('params', 'bias')] are not part of a 'conv' module")
  with pytest.raises(ValueError) as info:
    mapping.make_plan(lost, RULES)
  # Every problem, each on its own line.
  assert str(info.value).splitlines()[1:] == [
      '  extra: matched by 0 rules, expected exactly 1',
      '  more: matched by 0 rules, expected exactly 1'
  ]


def test_a_state_dict_missing_one_tensor_is_refused_with_its_name_and_hint():
  plan = mapping.make_plan(_variables(), RULES)
  state_dict = _torch(plan)
  del state_dict['fc.bias']
  with pytest.raises(mapping.MappingError) as info:
    mapping.apply(state_dict, plan, 'model.safetensors', hint='try --timm_name')
  assert str(info.value).splitlines() == [
      'model.safetensors: 1 missing, 0 unexpected, 0 mis-shaped tensors',
      '  missing     fc.bias  expected shape (5,)', 'try --timm_name'
  ]
  # Without a hint, nothing follows the list.
  expected = [
      'w: 1 missing, 0 unexpected, 0 mis-shaped tensors',
      '  missing     fc.bias  expected shape (5,)'
  ]
  for refuse in (mapping.check, mapping.apply):
    with pytest.raises(mapping.MappingError) as info:
      refuse(state_dict, plan, 'w')
    assert str(info.value).splitlines() == expected
  assert str(mapping.MappingError('w', [('fc.bias', (5,))], [], [])).splitlines() == expected


def test_apply_gives_contiguous_float32_in_our_layout():
  plan = mapping.make_plan(_variables(), RULES)
  state_dict = _torch(plan, dtype=np.float64)
  variables = mapping.apply(state_dict, plan, 'w')
  kernel = variables['params']['stem']['kernel']
  assert kernel.dtype == np.float32 and kernel.flags['C_CONTIGUOUS']
  np.testing.assert_array_equal(kernel, state_dict['conv1.weight'].transpose(2, 3, 1, 0))
  assert variables['params']['head']['kernel'].dtype == np.float32
  np.testing.assert_array_equal(variables['batch_stats']['norm']['var'],
                                state_dict['bn1.running_var'])
