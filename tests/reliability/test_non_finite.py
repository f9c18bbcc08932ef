"""A learning rate of 1e30 makes step 2's loss overflow: the run stops, or skips and counts.

Either way no checkpoint ever holds a non-finite number.
"""

import types

import jax.numpy as jnp
import numpy as np

from se_flax import errors
from se_flax.train import state as state_lib
from tests.integration import harness

FLAGS = ('--config.learning_rate=1e30', '--config.num_train_steps=6', '--config.log_every_steps=2',
         '--config.checkpoint_every_steps=1')


def assert_all_finite(workdir):
  steps = harness.checkpoint_steps(workdir)
  assert steps
  for step in steps:
    for key, value in harness.checkpoint_arrays(workdir, step).items():
      if np.issubdtype(value.dtype, np.floating):
        assert np.isfinite(value).all(), f'step {step}: {key}'


def test_stop_names_the_step_and_its_metrics(digits_run, tmp_path):
  code, out, err = digits_run(*FLAGS)
  assert code == errors.EXIT_NON_FINITE, harness.describe(code, out, err)
  assert 'error: non-finite loss or gradients at step 2 (metrics {' in err
  assert "'finite': 0.0" in err and "config.nan_policy='skip'" in err
  # Step 1's update was finite (and checkpointed); step 2's was never applied.
  assert harness.checkpoint_steps(tmp_path / 'run') == [1]
  assert_all_finite(tmp_path / 'run')
  assert [r['step'] for r in harness.metric_lines(tmp_path / 'run')] == []


def test_skip_counts_the_skipped_steps(digits_run, tmp_path):
  code, out, err = digits_run(*FLAGS, '--config.nan_policy=skip')
  assert code == 0, harness.describe(code, out, err)
  train = [r for r in harness.metric_lines(tmp_path / 'run') if r['split'] == 'train']
  assert [(r['step'], r['skipped']) for r in train] == [(2, 1.0), (4, 2.0), (6, 2.0)]
  assert 'warning: skipped 2 update(s) with a non-finite loss' in err
  assert harness.checkpoint_steps(tmp_path / 'run') == [1, 2, 3, 4, 5, 6]
  assert_all_finite(tmp_path / 'run')


def test_state_with_an_overflowed_update_is_never_saved():
  """The guard before every save: a NaN or Inf anywhere in params, statistics or momentum."""
  finite = dict(params={'w': jnp.ones(3)}, batch_stats={'mean': jnp.zeros(2)}, opt_state=({
      'w': jnp.zeros(3)
  }, jnp.int32(4)))
  is_finite = state_lib.is_finite
  assert is_finite(types.SimpleNamespace(**finite))
  for field, bad in (('params', {
      'w': jnp.array([1.0, jnp.inf, 0.0])
  }), ('batch_stats', {
      'mean': jnp.array([jnp.nan, 0.0])
  }), ('opt_state', ({
      'w': jnp.array([0.0, 0.0, -jnp.inf])
  }, jnp.int32(4)))):
    assert not is_finite(types.SimpleNamespace(**{**finite, field: bad})), field
