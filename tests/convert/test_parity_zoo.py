"""Importing timm's vgg16_bn and inception_resnet_v2: the layout rules parity alone does not name.

Logits parity of both at full size is in test_parity_full.py (its fixtures
cover every timm name); these tests pin the two conversions that differ from
the ResNets': VGG's fc1 permutation and Inception-ResNet-v2's BN epsilon.
"""

import json

import numpy as np
from safetensors.numpy import save_file

from configs import default
from se_flax import models
from se_flax.convert import __main__ as convert_cli
from se_flax.convert import importer
from se_flax.convert import mapping
from se_flax.convert import timm_names
from se_flax.models import stored


def test_fc1_conv_becomes_a_dense_on_the_flattened_map():
  # timm's fc1 is a 7x7 conv over a (C, 7, 7) map; ours a Dense over the (7, 7, C) map flattened.
  rng = np.random.default_rng(0)
  channels, outputs = 5, 3
  weight = rng.normal(size=(outputs, channels, 7, 7)).astype(np.float32)
  feature_map = rng.normal(size=(channels, 7, 7)).astype(np.float32)
  conv_out = np.einsum('ochw,chw->o', weight, feature_map)
  leaf = mapping._KINDS[mapping.CONV7X7_DENSE][0]
  kernel = leaf.to_flax(weight)
  assert kernel.shape == (7 * 7 * channels, outputs)
  assert leaf.source_shape(kernel.shape) == weight.shape
  dense_out = feature_map.transpose(1, 2, 0).reshape(-1) @ kernel
  np.testing.assert_allclose(dense_out, conv_out, rtol=1e-5, atol=1e-5)


def test_vgg_plan_reads_fc1_as_a_7x7_conv():
  shapes = importer.expected_state_dict_shapes('vgg16_bn')
  assert shapes['pre_logits.fc1.weight'] == (4096, 512, 7, 7)
  assert shapes['pre_logits.fc2.weight'] == (4096, 4096, 1, 1)
  # The last conv of stage 5 is features.40 (13 convs x 3 modules + 4 pools, 0-based).
  assert shapes['features.40.weight'] == (512, 512, 3, 3)
  assert shapes['features.41.running_var'] == (512,)


def test_inception_resnet_v2_keeps_its_bn_epsilon_under_any_config(tmp_path):
  meta = importer.model_meta('inception_resnet_v2', 1000)
  assert meta['overrides']['bn_epsilon'] == 1e-3
  (tmp_path / stored.VARIABLES).mkdir()
  (tmp_path / stored.MODEL_JSON).write_text(json.dumps(meta))
  config = default.get_base_config()
  config.model.name, config.init_from = 'inception_resnet_v2', str(tmp_path)
  assert config.model.bn_epsilon == 1e-5
  model = models.from_config(config, 1000)
  assert model.bn_epsilon == 1e-3


def test_zoo_names_resolve_both_ways():
  for name in ('vgg16_bn', 'inception_resnet_v2'):
    assert timm_names.resolve(None, name) == (name, name)
    assert timm_names.resolve(name, None) == (name, name)


def test_cli_takes_vgg16_bn_and_lists_what_a_wrong_file_lacks(tmp_path, capsys):
  weights = tmp_path / 'partial.safetensors'
  save_file({'features.0.weight': np.zeros((64, 3, 3, 3), np.float32)}, str(weights))
  code = convert_cli.main(
      ['--from=timm', '--timm_name=vgg16_bn', f'--weights={weights}', f'--out={tmp_path / "out"}'])
  assert code == 1
  err = capsys.readouterr().err
  assert "timm 'vgg16_bn' -> our 'vgg16_bn'" in err
  assert 'missing     pre_logits.fc1.weight  expected shape (4096, 512, 7, 7)' in err
  assert not (tmp_path / 'out').exists()
