"""The EMA of the weights: its recurrence against numpy, the NaN guard, resume, evaluation."""

import types
from typing import Any

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.train import checkpoint as ckpt_lib
from se_flax.train import loop
from se_flax.train import parallel
from se_flax.train import setup as setup_lib
from se_flax.train import state as state_lib
from tests.train.tiny import IMAGE_SHAPE
from tests.train.tiny import make_batch
from tests.train.tiny import tiny_setup

DECAY = 0.8


def ema_setup(**overrides):
  """The tiny run on one device with the EMA on, from a state holding it (as the loop makes it)."""
  setup = tiny_setup(1, **{'ema.decay': DECAY, **overrides})
  setup.state = state_lib.with_ema(setup.state)
  return setup


def train(setup, state, seeds):
  for seed in seeds:
    state, metrics = setup.train(state, parallel.global_batch(make_batch(seed=seed), setup.mesh))
  return state, metrics


class _TinyRun(setup_lib.Run):
  """A setup.Run of the tiny net; its step-0 weights are the tests' shared initialisation."""

  def fresh_state(self):
    return jax.tree.map(jnp.copy, tiny_setup(1).state)


def fake_run(setup, workdir='unused'):
  """The setup.Run that loop.restore and loop.restore_or_init read, for the tiny net."""
  return _TinyRun(config=setup.config, workdir=str(workdir), info=None, mesh=setup.mesh,
                  model=setup.model, steps_per_epoch=10, total_steps=100, eval_every=10,
                  tx=setup.state.tx, schedule=setup.schedule, input_shape=(1,) + IMAGE_SHAPE)


def test_ema_follows_the_numpy_recurrence():
  setup = ema_setup()
  state = setup.state
  weights = jax.device_get((state.params, state.batch_stats))
  expected = jax.tree.map(lambda x: np.asarray(x, np.float64), weights)
  for seed in range(3):
    state, _ = train(setup, state, [seed])
    new = jax.device_get((state.params, state.batch_stats))
    expected = jax.tree.map(lambda e, w: DECAY * e + (1 - DECAY) * w, expected, new)
  got = jax.device_get((state.ema_params, state.ema_batch_stats))
  jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7), got, expected)
  # Three updates later the average is well away from both the start and the weights.
  start, now = weights[0]['Dense_0']['kernel'], new[0]['Dense_0']['kernel']
  assert not np.allclose(got[0]['Dense_0']['kernel'], now, rtol=1e-3)
  assert not np.allclose(got[0]['Dense_0']['kernel'], start, rtol=1e-3)


def test_without_ema_the_state_tree_is_as_before():
  state = tiny_setup(1).state
  assert state.ema_params is None and state.ema_batch_stats is None and not state.has_ema
  paths = [jax.tree_util.keystr(p[:1]) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
  assert sorted(set(paths)) == ['.batch_stats', '.opt_state', '.params', '.rng', '.step']
  assert state.update_ema(DECAY) is state


def test_a_skipped_update_keeps_the_ema():
  setup = ema_setup(nan_policy='skip')
  state, _ = train(setup, setup.state, [0])
  before = jax.device_get(state)
  batch = make_batch(seed=7)
  batch['image'][3, 0, 0, 0] = np.nan
  state, metrics = setup.train(state, parallel.global_batch(batch, setup.mesh))
  assert float(metrics['skipped']) == 1 and int(state.step) == 2
  after = jax.device_get(state)
  jax.tree.map(np.testing.assert_array_equal, (after.ema_params, after.ema_batch_stats),
               (before.ema_params, before.ema_batch_stats))


def test_resumed_run_with_ema_is_bitwise_the_uninterrupted_one(tmp_path):
  setup = ema_setup()
  run = fake_run(setup, tmp_path)
  uninterrupted, _ = train(setup, jax.tree.map(jnp.copy, setup.state), range(4))

  # The loop's fresh start: the EMA starts at the initial weights.
  start = loop.restore_or_init(run, ckpt_lib.TrainCheckpointer(tmp_path / 'a'))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(start.ema_params),
               jax.device_get(start.params))
  half, _ = train(setup, start, range(2))
  with ckpt_lib.TrainCheckpointer(tmp_path) as checkpointer:
    checkpointer.save(2, half, config=setup.config)
  with ckpt_lib.TrainCheckpointer(tmp_path) as checkpointer:
    resumed = loop.restore_or_init(run, checkpointer)
  assert int(resumed.step) == 2 and resumed.has_ema
  resumed, _ = train(setup, resumed, range(2, 4))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed),
               jax.device_get(uninterrupted))


class _Writer:

  def __init__(self):
    self.records = []

  def write(self, step, split, values):
    self.records.append((step, split, dict(values)))


def _numpy_state(with_ema):
  params = {'w': np.ones(2, np.float32)}
  return state_lib.TrainState(step=np.int32(4), params=params, batch_stats={}, opt_state=(),
                              rng=np.zeros(2, np.uint32), tx=None,
                              ema_params={'w': np.zeros(2, np.float32)} if with_ema else None,
                              ema_batch_stats={} if with_ema else None)


def _fake_evaluate(run, state, eval_step):
  """Raw weights: top-1 error 0.3; EMA weights (zeros here): 0.2."""
  error = 0.2 if not state.params['w'].any() else 0.3
  return {
      'top1_error': error,
      'top5_error': error / 2,
      'loss': 1.0,
      'count': 10.0,
      'undecodable_images': 0.0
  }


@pytest.mark.parametrize('select_best', ['ema', 'raw'])
def test_evaluation_reports_both_weights_and_which_ranks(monkeypatch, capsys, select_best):
  monkeypatch.setattr(loop, 'evaluate', _fake_evaluate)
  config = tiny_setup(1).config.copy_and_resolve_references()
  config.ema.decay, config.ema.select_best = DECAY, select_best
  run = types.SimpleNamespace(config=config, total_steps=4)
  state, writer = _numpy_state(True), _Writer()
  evals = loop._evaluate_both(run, state, None, 4, writer)
  assert [(s, split, r['top1_error'], r['selected']) for s, split, r in writer.records
         ] == [(4, 'eval', 0.3, float(select_best == 'raw')),
               (4, 'eval_ema', 0.2, float(select_best == 'ema'))]
  assert evals[loop._selected(run, state)]['top1_error'] == (0.2 if select_best == 'ema' else 0.3)
  out = capsys.readouterr().out
  assert f'best by {select_best} weights' in out
  assert 'eval (EMA weights) at step 4: top-1 error 0.2000' in out
  loop._report(run, 100, 0, evals, 1.0)
  summary = capsys.readouterr().out
  accuracy = '80.00%' if select_best == 'ema' else '70.00%'
  assert f'test top-1 accuracy  {accuracy}' in summary
  assert f"config.ema.select_best='{select_best}'" in summary


def test_evaluation_without_ema_writes_the_eval_record_as_before(monkeypatch, capsys):
  monkeypatch.setattr(loop, 'evaluate', _fake_evaluate)
  run = types.SimpleNamespace(config=tiny_setup(1).config, total_steps=4)
  writer = _Writer()
  evals = loop._evaluate_both(run, _numpy_state(False), None, 4, writer)
  assert list(evals) == ['raw'] and [split for _, split, _ in writer.records] == ['eval']
  assert 'selected' not in writer.records[0][2]
  assert capsys.readouterr().out.startswith('eval at step 4: top-1 error 0.3000')


class _StateBeforeEma(struct.PyTreeNode):
  """The TrainState layout that checkpoints written before the EMA hold."""
  step: Any
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: Any
  tx: Any = struct.field(pytree_node=False)


def test_checkpoints_written_before_the_ema_existed_still_restore(tmp_path):
  setup = tiny_setup(1)
  s = setup.state
  old = _StateBeforeEma(step=s.step, params=s.params, batch_stats=s.batch_stats,
                        opt_state=s.opt_state, rng=s.rng, tx=s.tx)
  with ckpt_lib.TrainCheckpointer(tmp_path) as checkpointer:
    checkpointer.save(3, old.replace(step=old.step + 3))
  with ckpt_lib.TrainCheckpointer(tmp_path) as checkpointer:
    restored = loop.restore(fake_run(setup, tmp_path), checkpointer)
  assert int(restored.step) == 3 and not restored.has_ema
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.params),
               jax.device_get(s.params))
