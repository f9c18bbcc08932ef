"""Excitation statistics against direct numpy computations on a small SE network."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from se_flax.analysis import excitation
from se_flax.analysis import gates as gates_lib
from se_flax.layers.se import SESpec
from se_flax.models.registry import create_model


def _model_and_vars(spec=None):
  model = create_model('se_cifar_resnet20', 10, se=spec or SESpec(reduction=4))
  x = jnp.asarray(np.random.RandomState(0).randn(6, 8, 8, 1), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  return model, variables, x


def test_flatten_gates_orders_blocks_and_averages_positions():
  model, variables, x = _model_and_vars(SESpec(reduction=4, squeeze='gather', gather_extent=2))
  _, state = model.apply(variables, x, train=False, mutable=['intermediates'])
  raw = state['intermediates']
  flat = gates_lib.flatten_gates(raw)
  assert list(flat) == [f'layer{s}_{b}' for s in (1, 2, 3) for b in range(3)]
  # The gather gate is a 4x4 grid in stage 1; flatten averages it over positions.
  grid = np.asarray(raw['layer1_0']['se']['gate'][0])
  assert grid.shape == (6, 4, 4, 16)
  np.testing.assert_allclose(np.asarray(flat['layer1_0']), grid.mean(axis=(1, 2)), rtol=1e-6)


def test_gate_fn_equals_sigmoid_of_the_blocks_own_excitation():
  model, variables, x = _model_and_vars()
  gates = gates_lib.make_gate_fn(model)(variables, x)
  # Recompute block layer1_0's gate from its input, read through capture_intermediates.
  _, inter = model.apply(variables, x, train=False, capture_intermediates=True,
                         mutable=['intermediates'])
  out = inter['intermediates']['layer1_0']['bn2']['__call__'][0]
  # A BatchNorm before an SE block returns a Normalised (layers/norm.py).
  se_in = np.asarray(getattr(out, 'value', out))
  p = variables['params']['layer1_0']['se']
  z = se_in.mean(axis=(1, 2))
  h = np.maximum(z @ np.asarray(p['fc1']['kernel']) + np.asarray(p['fc1']['bias']), 0)
  s = 1 / (1 + np.exp(-(h @ np.asarray(p['fc2']['kernel']) + np.asarray(p['fc2']['bias']))))
  np.testing.assert_allclose(np.asarray(gates['layer1_0']), s, rtol=1e-5, atol=1e-6)


def test_stats_per_class_means_and_masking():
  rng = np.random.RandomState(1)
  labels = np.array([0, 1, 1, 2, 0, 3])
  mask = np.array([1, 1, 1, 1, 0, 1], np.float32)  # the fifth example is padding
  g = {'layer1_0': rng.rand(6, 5), 'layer2_0': rng.rand(6, 7)}
  stats = gates_lib.GateStats(classes=(0, 1))
  stats.add(g, labels, mask)
  stats.add(g, labels, mask)  # twice: means unchanged, counts doubled
  means = stats.class_means()
  np.testing.assert_array_equal(stats.counts, [2, 4, 10])
  np.testing.assert_allclose(means['layer1_0'][0], g['layer1_0'][0])
  np.testing.assert_allclose(means['layer1_0'][1], g['layer1_0'][[1, 2]].mean(axis=0))
  np.testing.assert_allclose(means['layer2_0'][2], g['layer2_0'][mask > 0].mean(axis=0))


def test_block_table_and_constant_blocks():
  # Block b: class-dependent gates; block c: the same gate whatever the class.
  labels = np.repeat(np.arange(4), 8)
  rng = np.random.RandomState(2)
  varied = np.clip(0.5 + 0.3 * np.eye(4)[labels] @ rng.rand(4, 6), 0, 1)
  constant = np.full((32, 6), 0.995)
  stats = gates_lib.GateStats(classes=(0, 1, 2, 3))
  stats.add({
      'layer1_0': varied,
      'layer4_2': constant,
      'layer2_0': varied * 0.9
  }, labels, np.ones(32))
  rows = {r['block']: r for r in stats.block_table()}
  assert rows['layer4_2']['saturated'] == 1.0
  assert rows['layer1_0']['saturated'] == 0.0
  assert rows['layer4_2']['class_spread'] == 0.0
  per_class = np.stack([varied[labels == c].mean(0) for c in range(4)])
  np.testing.assert_allclose(rows['layer1_0']['class_spread'], np.std(per_class, axis=0).mean())
  assert gates_lib.constant_blocks(list(rows.values())) == ['layer4_2']


def test_write_outputs_files(tmp_path):
  labels = np.repeat(np.arange(3), 4)
  rng = np.random.RandomState(3)
  stats = gates_lib.GateStats(classes=(0, 2))
  stats.add({
      'layer1_0': rng.rand(12, 4),
      'layer1_1': rng.rand(12, 4),
      'layer2_0': rng.rand(12, 8)
  }, labels, np.ones(12))
  text = excitation.write_outputs(stats, str(tmp_path))
  assert '3 SE blocks, 12 images.' in text
  for name in ('stage0.png', 'stage1.png', 'distribution.png', 'blocks.csv', 'summary.txt'):
    assert os.path.getsize(tmp_path / name) > 0, name
  csv_lines = (tmp_path / 'blocks.csv').read_text().strip().splitlines()
  assert csv_lines[0].startswith('block,channels,mean,std')
  assert len(csv_lines) == 4
