"""Full-size parity: every timm name we import gives timm's logits (fixtures from make_fixtures.py).

Each fixture is timm's own network (`timm.create_model(name)`, the real stage
layout) with seeded weights and BN running statistics, run in eval mode on one
seeded 64 x 50 input. Stage sizes, stride placement and stem pooling are
per-name facts of timm_names.py, which one-unit fixtures cannot check; here
the whole network must reproduce timm's logits within 1e-4 of the largest.

The forward pass runs op by op rather than under one jit: XLA takes seconds to
compile a whole network (about 18 s for SE-ResNet-152 on one CPU core), while
op by op each primitive compiles once and serves every network.
"""

import math

import numpy as np
import pytest

from se_flax.convert import importer
from se_flax.convert import timm_names
from se_flax.convert import writer
from tests.convert import fixtures_lib
from tests.convert import timm_layouts

TOLERANCE = 1e-4


def test_every_timm_name_has_a_full_size_fixture():
  assert fixtures_lib.full_names() == sorted(timm_names.TIMM_MODELS)
  assert sorted(timm_layouts.ARCHITECTURES) == sorted(timm_names.TIMM_MODELS)


@pytest.mark.parametrize('timm_name', sorted(timm_names.TIMM_MODELS))
def test_full_size_logits_match_timm(timm_name):
  fixture = fixtures_lib.load_full(timm_name)
  # Both stems halve the input (ceil); an even side makes ceil-mode pooling differ from floor mode.
  height, width = fixture.images.shape[1:3]
  assert any(math.ceil(d / 2) % 2 == 0 for d in (height, width))
  variables, meta = importer.convert_state_dict(fixture.state_dict, timm_name)
  assert 'stage_sizes' not in meta['overrides']  # the preset's own, full-size layout
  assert meta['num_classes'] == fixture.meta['num_classes']
  ours = np.asarray(writer.model_from_meta(meta).apply(variables, fixture.images))
  error = fixtures_lib.relative_error(ours, fixture.logits)
  assert error < TOLERANCE, f'{timm_name}: max relative error {error:.2e}'
