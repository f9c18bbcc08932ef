"""Writes tests/convert/fixtures/: timm's logits for seeded small timm models, and timm's key lists.

Needs torch and timm, which the project's own environment does not have:

    python3 -m venv .venv-torch
    .venv-torch/bin/pip install -r requirements-torch.txt
    .venv-torch/bin/python tests/convert/make_fixtures.py [TIMM_NAME ...]

For each entry of FIXTURES it builds the network with timm's own classes
(`timm.models.resnet.ResNet`, `timm.models.senet.SENet`) at one unit per stage,
loads the seeded state dict of fixture_weights.py (random weights, BN running
statistics far from 0 / 1), runs it in eval mode on a seeded input batch and
writes
    <name>.json         timm class and arguments, our timm name and stage sizes,
                        seed, digest and [key, shape] of every state-dict entry
    <name>.input.npy    the input batch, NCHW float32
    <name>.logits.npy   timm's float32 logits
For every timm name in SUPPORTED it also runs the full-size network
(`timm.create_model(name)`, the real stage layout) on one seeded input of
FULL_INPUT_SHAPE (or the name's FULL_INPUT_SHAPES entry) and writes
    <name>.full.json        timm name, seed, input shape, digest of the state dict
    <name>.full.logits.npy  timm's float32 logits
Given timm names as arguments, it writes only those full-size fixtures (and
timm_state_dicts.json). Neither weights nor inputs are stored: the tests rebuild both from the seed,
the state dict's layout from timm_layouts.py (checked here against timm's).
It also writes timm_state_dicts.json: the key lists and shapes of timm's
full-size `seresnet50` and `legacy_senet154` (shapes only) and the parameter
count of every timm name the converter supports. The output is a function of
this file, fixture_weights.py and the pinned torch / timm versions.
"""

import json
import os
import sys

import numpy as np
import timm
from timm.models import resnet as timm_resnet
from timm.models import senet as timm_senet
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fixture_weights  # noqa: E402  (imported by path: numpy-only, shared with the tests)
import timm_layouts  # noqa: E402  (imported by path: pure Python, shared with the tests)

OUT = os.path.join(HERE, 'fixtures')
UNITS = [1, 1, 1, 1]

# Each covers one block type / stem of the supported families.
FIXTURES = (
    # 7x7 stem + padded max-pool, stride on the 3x3, SE width rounded to a multiple of 8.
    dict(name='timm_seresnet_bottleneck', timm_name='seresnet50', timm_class='resnet.ResNet',
         timm_args=dict(block='Bottleneck', layers=UNITS,
                        block_args={'attn_layer': 'se'}), input_shape=[2, 3, 64, 64], seed=1),
    # Basic block with SE.
    dict(name='timm_seresnet_basic', timm_name='seresnet18', timm_class='resnet.ResNet',
         timm_args=dict(block='BasicBlock', layers=UNITS,
                        block_args={'attn_layer': 'se'}), input_shape=[2, 3, 64, 64], seed=2),
    # Plain grouped ResNeXt bottleneck.
    dict(name='timm_resnext_bottleneck', timm_name='resnext50_32x4d', timm_class='resnet.ResNet',
         timm_args=dict(block='Bottleneck', layers=UNITS, cardinality=32,
                        base_width=4), input_shape=[2, 3, 64, 64], seed=3),
    # Caffe port: 7x7 stem + ceil-mode pool, stride on the first 1x1, SE width C // 16.
    dict(name='legacy_seresnet_bottleneck', timm_name='legacy_seresnet50', timm_class='senet.SENet',
         timm_args=dict(block='SEResNetBottleneck', layers=UNITS, groups=1,
                        reduction=16), input_shape=[2, 3, 64, 64], seed=4),
    # Caffe port, grouped: stride on the 3x3.
    dict(name='legacy_seresnext_bottleneck', timm_name='legacy_seresnext50_32x4d',
         timm_class='senet.SENet', timm_args=dict(block='SEResNeXtBottleneck', layers=UNITS,
                                                  groups=32, reduction=16),
         input_shape=[2, 3, 64, 64], seed=5),
    # SENet-154: deep 3x3 stem, halved first 1x1, 64 groups, 3x3 stride-2 projections.
    # A non-square input whose stem output is odd on one side exercises ceil-mode pooling.
    dict(
        name='legacy_senet154', timm_name='legacy_senet154', timm_class='senet.SENet',
        timm_args=dict(block='SEBottleneck', layers=UNITS, groups=64, reduction=16, inplanes=128,
                       input_3x3=True, downsample_kernel_size=3, downsample_padding=1),
        input_shape=[2, 3, 72, 58], seed=6),
    # Caffe-port basic block: a ReLU before its SE block that our BasicBlock lacks (known gap).
    dict(name='legacy_seresnet_basic', timm_name='legacy_seresnet18', timm_class='senet.SENet',
         timm_args=dict(block='SEResNetBlock', layers=UNITS, groups=1,
                        reduction=16), input_shape=[2, 3, 64, 64], seed=7),
)
NUM_CLASSES = 10
# Full-size fixtures: batch 1, small enough to keep the tests fast. Both stems (7x7/2, or three
# 3x3 with the first /2) give a 32 x 25 map: its even side makes ceil-mode pooling pad (ceil and
# floor differ) and shifts the windows against the padded pool, its odd side changes the padded
# pool's output size (13) against ceil mode's (12). Stage 4 still sees 2 x 2 maps.
FULL_INPUT_SHAPE = [1, 3, 64, 50]
FULL_SEED = 100
# Inception-ResNet-v2's unpadded stem needs 75 pixels; 107 x 115 leaves 2 x 2 maps at Block8 and
# an even side after the first stride-2 conv, as the test above checks of every full fixture.
FULL_INPUT_SHAPES = {'inception_resnet_v2': [1, 3, 107, 115]}
FULL_STATE_DICTS = ('seresnet50', 'legacy_senet154')
SUPPORTED = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'resnext50_32x4d',
             'resnext101_32x4d', 'seresnet18', 'seresnet34', 'seresnet50', 'seresnet101',
             'seresnet152', 'seresnext50_32x4d', 'seresnext101_32x4d', 'legacy_seresnet18',
             'legacy_seresnet34', 'legacy_seresnet50', 'legacy_seresnet101', 'legacy_seresnet152',
             'legacy_seresnext50_32x4d', 'legacy_seresnext101_32x4d', 'legacy_senet154', 'vgg16_bn',
             'inception_resnet_v2')


def build(spec):
  module_name, class_name = spec['timm_class'].split('.')
  module = {'resnet': timm_resnet, 'senet': timm_senet}[module_name]
  args = dict(spec['timm_args'])
  args['block'] = getattr(module, args['block'])
  return getattr(module, class_name)(num_classes=NUM_CLASSES, **args)


def write_fixture(spec):
  model = build(spec).eval()
  layout = [[k, list(v.shape)] for k, v in model.state_dict().items()]
  tensors = fixture_weights.state_dict(layout, spec['seed'])
  model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
  x = fixture_weights.uniform('input', spec['input_shape'], spec['seed']).astype(np.float32)
  with torch.no_grad():
    logits = model(torch.from_numpy(x)).numpy()
  name = spec['name']
  np.save(os.path.join(OUT, f'{name}.input.npy'), x)
  np.save(os.path.join(OUT, f'{name}.logits.npy'), logits.astype(np.float32))
  meta = dict(spec, num_classes=NUM_CLASSES, stage_sizes=spec['timm_args']['layers'],
              input=f'{name}.input.npy', logits=f'{name}.logits.npy',
              digest=fixture_weights.digest(tensors), layout=layout, versions=_versions())
  _write_json(os.path.join(OUT, f'{name}.json'), meta)
  print(f'{name}: {sum(int(np.prod(s)) for _, s in layout):,} values, '
        f'logits {logits.shape}, |logits| max {np.abs(logits).max():.3f}')


def write_full_fixture(name, seed):
  model = timm.create_model(name, pretrained=False).eval()
  layout = [[k, list(v.shape)] for k, v in model.state_dict().items()]
  if layout != timm_layouts.layout(name):
    raise AssertionError(f'timm_layouts.layout({name!r}) differs from timm\'s state dict')
  tensors = fixture_weights.state_dict(layout, seed, damp_residuals=True)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
  input_shape = FULL_INPUT_SHAPES.get(name, FULL_INPUT_SHAPE)
  x = fixture_weights.uniform('input', input_shape, seed).astype(np.float32)
  with torch.no_grad():
    logits = model(torch.from_numpy(x)).numpy()
  np.save(os.path.join(OUT, f'{name}.full.logits.npy'), logits.astype(np.float32))
  meta = dict(timm_name=name, seed=seed, input_shape=input_shape, damp_residuals=True,
              num_classes=int(logits.shape[1]), logits=f'{name}.full.logits.npy',
              digest=fixture_weights.digest(tensors), versions=_versions())
  _write_json(os.path.join(OUT, f'{name}.full.json'), meta)
  print(f'{name}.full: {sum(v.size for v in tensors.values()):,} values, '
        f'|logits| max {np.abs(logits).max():.3f}, std {logits.std():.3f}')


def write_state_dicts():
  models, counts = {}, {}
  for name in SUPPORTED:
    # Shapes only: the meta device allocates nothing.
    with torch.device('meta'):
      model = timm.create_model(name, pretrained=False)
    counts[name] = sum(p.numel() for p in model.parameters())
    if name in FULL_STATE_DICTS:
      models[name] = [[k, list(v.shape)] for k, v in model.state_dict().items()]
  _write_json(os.path.join(OUT, 'timm_state_dicts.json'),
              dict(versions=_versions(), param_counts=counts, state_dicts=models))
  print(f'timm_state_dicts.json: {len(counts)} parameter counts, key lists of {list(models)}')


def _versions():
  return {'torch': torch.__version__.split('+')[0], 'timm': timm.__version__}


def _write_json(path, obj):
  with open(path, 'w') as f:
    f.write(_dumps(obj) + '\n')


def _dumps(obj, indent=''):
  # Dicts expand, lists of [key, shape] pairs take one line per pair: readable diffs, small files.
  inner = indent + ' '
  if isinstance(obj, dict):
    items = [f'{inner}{json.dumps(k)}: {_dumps(v, inner)}' for k, v in sorted(obj.items())]
    return '{\n' + ',\n'.join(items) + '\n' + indent + '}'
  if isinstance(obj, list) and obj and all(isinstance(v, list) for v in obj):
    return '[\n' + ',\n'.join(inner + json.dumps(v) for v in obj) + '\n' + indent + ']'
  return json.dumps(obj)


def main(names=None):
  """Writes every fixture, or with `names` (timm names) only those full-size fixtures."""
  torch.manual_seed(0)  # only timm's own init draws from it; all values are reloaded
  torch.set_num_threads(1)  # one summation order: bitwise repeatable logits
  torch.use_deterministic_algorithms(True)
  os.makedirs(OUT, exist_ok=True)
  if not names:
    for spec in FIXTURES:
      write_fixture(spec)
  for i, name in enumerate(SUPPORTED):
    if not names or name in names:
      write_full_fixture(name, FULL_SEED + i)
  write_state_dicts()


if __name__ == '__main__':
  main(sys.argv[1:])
