"""`main.py --mode=summary` prints counts that agree with independent ones.

The printed table is parsed and checked against parameters summed here from
the model's own variable tree, stage by stage, against timm's published
parameter count and against the paper's GFLOPs (experiments/paper.py).
"""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import imagenet
from experiments import paper
from experiments import runs
from se_flax.layers.se import SESpec
from se_flax.models import registry

# Its module fixture is built once: every test of the file runs on the same pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('test_summary_mode')

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# timm's legacy_seresnet50, the Caffe layout of the paper (experiments/paper_reference.md).
LEGACY_SERESNET50_PARAMS = 28_088_024
LEGACY_SERESNET50_GMACS = 3.860
# ResNet-50's stage outputs on a 224 crop (He et al. 2016, Table 1).
STAGE_OUTPUTS = {
    'layer1': (56, 56, 256),
    'layer2': (28, 28, 512),
    'layer3': (14, 14, 1024),
    'layer4': (7, 7, 2048)
}


def _summary(*flags):
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO)
  proc = subprocess.run([
      sys.executable, 'main.py', '--mode=summary', '--config=configs/imagenet.py:model=se_resnet50',
      *flags
  ], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def _parse(text):
  """({stage: params}, {stage: output shape}, total params, GMACs) of the printed table."""
  params, shapes = {}, {}
  for line in text.splitlines():
    m = re.fullmatch(r'(stem|layer\d|head)\s+([\d,]+)\s+(.+)', line.strip())
    if m:
      params[m.group(1)] = int(m.group(2).replace(',', ''))
      shapes[m.group(1)] = None if m.group(3) == '-' else tuple(
          int(v) for v in re.findall(r'\d+', m.group(3)))
  total = int(re.search(r'^total\s+([\d,]+)$', text, re.M).group(1).replace(',', ''))
  gmacs = float(re.search(r'GMACs.*: ([\d.]+)$', text, re.M).group(1))
  return params, shapes, total, gmacs


def _param_tree(se):
  model = registry.create_model('se_resnet50', 1000, se=se)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(
      (1, 224, 224, 3)), train=False))
  return variables['params']


def _stage(module):
  if module.startswith('layer'):
    return module.split('_')[0]
  return 'head' if module.startswith('fc') else 'stem'


@pytest.fixture(scope='module')
def standard():
  return _summary()


def test_total_is_the_sum_of_the_parameter_tree_and_timms_count(standard):
  params, _, total, _ = _parse(standard)
  tree = _param_tree(SESpec())
  expected = {}
  for module, sub in tree.items():
    expected[_stage(module)] = expected.get(_stage(module), 0) + sum(
        int(np.prod(x.shape)) for x in jax.tree.leaves(sub))
  assert params == expected
  assert total == sum(expected.values()) == LEGACY_SERESNET50_PARAMS


def test_stage_outputs_are_resnet50s(standard):
  _, shapes, _, _ = _parse(standard)
  assert {k: v for k, v in shapes.items() if v} == STAGE_OUTPUTS


def test_gmacs_are_the_papers_gflops(standard):
  _, _, _, gmacs = _parse(standard)
  published = paper.find({'model.se.squeeze': 'avg'}, ('Table 16',)).gflops  # 3.87
  assert gmacs == pytest.approx(published, rel=0.005)
  assert gmacs == LEGACY_SERESNET50_GMACS  # printed to timm's three decimals
  assert 'SE: SESpec(reduction=16' in standard


def test_no_squeeze_costs_the_papers_4_27_gflops():
  # The flag exactly as the squeeze sweep (experiments/squeeze.py) writes it.
  flags = runs.override_flags({'model.se.squeeze': 'none'},
                              imagenet.get_config('model=se_resnet50'))
  text = _summary(*flags)
  _, _, total, gmacs = _parse(text)
  assert gmacs == pytest.approx(paper.find({'model.se.squeeze': 'none'}).gflops, rel=0.005)
  # Table 16: the 1x1 convolutions that replace the pooling have the FC layers' parameters.
  assert total == LEGACY_SERESNET50_PARAMS
