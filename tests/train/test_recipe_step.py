"""The train step with the RSB pieces: BCE, Mixup/CutMix and their keys, against numpy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.train import mix
from se_flax.train import parallel
from se_flax.train import step as step_lib
from tests.train.test_recipe_loss import mixed_targets
from tests.train.test_recipe_loss import np_bce
from tests.train.test_recipe_loss import np_softmax_ce
from tests.train.test_recipe_loss import smoothed
from tests.train.tiny import make_batch
from tests.train.tiny import NUM_CLASSES
from tests.train.tiny import tiny_setup

# CutMix alone: each Beta sampler costs seconds to compile, and one shows the wiring.
MIX = {'mix.cutmix_alpha': 1.0}


def train_logits(setup, images, dropout_rng=None):
  """The model's training-mode logits for `setup.state`, outside the step, in float64."""
  state = setup.state
  variables = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  rngs = {'dropout': dropout_rng} if dropout_rng is not None else {}
  apply = jax.jit(functools.partial(setup.model.apply, train=True, mutable=['batch_stats']))
  logits, _ = apply(variables, images, rngs=rngs)
  return np.asarray(logits, np.float64)


@pytest.mark.parametrize('threshold', [0.0, 0.2])
def test_bce_step_loss_and_errors_match_numpy(threshold):
  # RSB's 0.2 reaches the step: smoothed targets (0.91, 0.01) become one-hot rows.
  setup = tiny_setup(1, loss='bce', label_smoothing=0.1, bce_target_threshold=threshold)
  batch = make_batch(seed=11)
  logits = train_logits(setup, batch['image'])
  _, metrics = setup.train(setup.state, parallel.global_batch(batch, setup.mesh))
  metrics = jax.device_get(metrics)
  targets = smoothed(batch['label'], NUM_CLASSES, 0.1)
  if threshold:
    targets = (targets > threshold).astype(np.float64)
  expected = np_bce(logits, targets).sum()
  np.testing.assert_allclose(metrics['loss_sum'], expected, rtol=1e-5)
  assert metrics['top1_correct'] == (logits.argmax(-1) == batch['label']).sum()


def test_mixed_step_uses_its_own_key_and_keeps_dropouts():
  # Two devices: the pairing with the reversed batch crosses the device boundary.
  setup = tiny_setup(2, dropout_rate=0.5, label_smoothing=0.1, **MIX)
  state = setup.state
  batch = make_batch(seed=12)
  step = 5
  state = state.replace(step=jnp.int32(step))
  rng = jax.device_get(state.rng)
  # Mixup/CutMix draws from a stream of its own; dropout keeps the key it always had.
  mix_key = jax.random.fold_in(jax.random.fold_in(rng, 1), step)
  dropout_key = jax.random.fold_in(rng, step)
  targets = smoothed(batch['label'], NUM_CLASSES, 0.1).astype(np.float32)
  mix_fn = jax.jit(lambda key, x, t: mix.mix_batch(key, x, t, setup.config.mix))
  images, mixed = jax.device_get(mix_fn(mix_key, batch['image'], targets))
  assert not np.allclose(mixed, targets)  # this step's draw does mix (prob is 1)
  logits = train_logits(setup, images, dropout_key)

  _, metrics = setup.train(state, parallel.global_batch(batch, setup.mesh))
  metrics = jax.device_get(metrics)
  np.testing.assert_allclose(metrics['loss_sum'], np_softmax_ce(logits, mixed).sum(), rtol=1e-5)
  # Train errors count the original labels, not the mixed targets.
  assert metrics['top1_correct'] == (logits.argmax(-1) == batch['label']).sum()


def test_without_mix_the_step_is_unchanged():
  # alpha 0 (the default) leaves the batch and the dropout key alone: old runs train as before.
  setup = tiny_setup(1, dropout_rate=0.5)
  batch = make_batch(seed=13)
  dropout_key = jax.random.fold_in(jax.device_get(setup.state.rng), 0)
  logits = train_logits(setup, batch['image'], dropout_key)
  _, metrics = setup.train(setup.state, parallel.global_batch(batch, setup.mesh))
  expected = np_softmax_ce(logits, smoothed(batch['label'], NUM_CLASSES, 0.0)).sum()
  np.testing.assert_allclose(float(metrics['loss_sum']), expected, rtol=1e-5)
  assert step_lib.check_config(setup.config) is None and not mix.enabled(setup.config.mix)


def test_bce_loss_threshold_default_and_edge():
  # Without a threshold the soft targets are used as they are.
  targets, logits = mixed_targets(seed=2)
  got = step_lib.bce_loss(jnp.asarray(logits), jnp.asarray(targets, jnp.float32))
  np.testing.assert_allclose(got, np_bce(logits, targets), rtol=1e-5)
  # A target exactly at the threshold is not above it (binary fractions: no rounding).
  t = np.array([[0.25, 0.5, 0.125]], np.float32)
  x = np.array([[0.3, -1.0, 2.0]], np.float32)
  got = step_lib.bce_loss(jnp.asarray(x), jnp.asarray(t), target_threshold=0.25)
  np.testing.assert_allclose(got, np_bce(x, np.array([[0.0, 1.0, 0.0]])), rtol=1e-5)
