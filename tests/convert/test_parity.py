"""Our logits equal timm's for the same weights (fixtures from make_fixtures.py).

Each fixture is a timm network at one unit per stage with seeded weights and
BN running statistics; timm ran it in eval mode. The import must reproduce its
logits within 1e-4 of the largest logit, in float32.
"""

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from se_flax.convert import __main__ as cli
from se_flax.convert import importer
from se_flax.convert import writer
from tests.convert import fixtures_lib

TOLERANCE = 1e-4


def _forward(variables, meta, images):
  model = writer.model_from_meta(meta)
  return np.asarray(jax.jit(model.apply)(variables, images))


@pytest.mark.parametrize('name', fixtures_lib.names())
def test_logits_match_timm(name):
  fixture = fixtures_lib.load(name)
  meta = fixture.meta
  variables, model_meta = importer.convert_state_dict(fixture.state_dict, meta['timm_name'],
                                                      stage_sizes=meta['stage_sizes'])
  assert model_meta['num_classes'] == meta['num_classes']  # read from the checkpoint's head
  ours = _forward(variables, model_meta, fixture.images)
  error = fixtures_lib.relative_error(ours, fixture.logits)
  assert error < TOLERANCE, f'{name}: max relative error {error:.2e}'


def test_cli_round_trip(tmp_path):
  fixture = fixtures_lib.load('timm_seresnet_basic')
  weights = tmp_path / 'seresnet18.safetensors'
  save_file(fixture.state_dict, str(weights))
  out = tmp_path / 'imported'
  argv = [
      '--from=timm', '--model=se_resnet18', '--timm_name=seresnet18', f'--weights={weights}',
      f'--out={out}', '--stage_sizes=1,1,1,1'
  ]
  assert cli.main(argv) == 0

  variables, meta = writer.load_variables(out)
  assert meta['model'] == 'se_resnet18'
  assert meta['num_classes'] == 10
  assert meta['source'] == {'from': 'timm', 'timm_name': 'seresnet18', 'weights': str(weights)}
  assert meta['overrides']['se']['rounding'] == 'multiple8'
  assert meta['overrides']['stage_sizes'] == [1, 1, 1, 1]
  assert set(variables) == {'params', 'batch_stats'}
  ours = _forward(variables, meta, fixture.images)
  assert fixtures_lib.relative_error(ours, fixture.logits) < TOLERANCE

  # An existing output is kept unless --overwrite is given.
  assert cli.main(argv) == 1
  assert cli.main(argv + ['--overwrite']) == 0


@pytest.mark.parametrize('name,wrong', [
    ('legacy_seresnet_bottleneck', {
        'stride_in_1x1': False
    }),
    ('timm_seresnet_bottleneck', {
        'stem_pool': 'ceil'
    }),
])
def test_layout_overrides_are_needed(name, wrong):
  # The fixtures tell the layouts apart: the wrong stride placement or pooling breaks parity.
  fixture = fixtures_lib.load(name)
  variables, meta = importer.convert_state_dict(fixture.state_dict, fixture.meta['timm_name'],
                                                stage_sizes=fixture.meta['stage_sizes'])
  meta['overrides'].update(wrong)
  ours = _forward(variables, meta, fixture.images)
  assert fixtures_lib.relative_error(ours, fixture.logits) > 1e-2
