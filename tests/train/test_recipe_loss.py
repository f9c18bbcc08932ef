"""The targets and losses of step.py against numpy, and the train step's config rules."""

import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.errors import ConfigError
from se_flax.train import step as step_lib
from tests.train.tiny import make_config


def np_bce(logits, targets):
  """-(t log s(x) + (1 - t) log(1 - s(x))), meaned over classes, in float64."""
  x = logits.astype(np.float64)
  log_p = -np.logaddexp(0.0, -x)
  log_not_p = -np.logaddexp(0.0, x)
  return -(targets * log_p + (1 - targets) * log_not_p).mean(axis=-1)


def np_softmax_ce(logits, targets):
  x = logits.astype(np.float64)
  x = x - x.max(axis=-1, keepdims=True)
  log_softmax = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
  return -(targets * log_softmax).sum(axis=-1)


def smoothed(labels, k, eps):
  targets = np.full((len(labels), k), eps / k)
  targets[np.arange(len(labels)), labels] += 1 - eps
  return targets


def mixed_targets(seed=0, b=6, k=5, eps=0.1, lam=0.7):
  """Smoothed one-hot rows mixed with the batch reversed, as Mixup makes them."""
  rng = np.random.RandomState(seed)
  labels = rng.randint(0, k, size=b)
  t = smoothed(labels, k, eps)
  return lam * t + (1 - lam) * t[::-1], rng.normal(size=(b, k)).astype(np.float32) * 3


def test_one_hot_targets_are_smoothed_rows():
  labels = np.array([0, 3, 2])
  got = step_lib.one_hot_targets(jnp.asarray(labels), 4, 0.2)
  assert got.dtype == jnp.float32 and got.shape == (3, 4)
  np.testing.assert_allclose(got, smoothed(labels, 4, 0.2), rtol=1e-6)


def test_bce_matches_numpy_on_soft_targets():
  targets, logits = mixed_targets()
  got = step_lib.per_example_loss(jnp.asarray(logits), jnp.asarray(targets, jnp.float32), 'bce')
  assert got.shape == (6,) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, np_bce(logits, targets), rtol=1e-5)


def test_bce_threshold_binarises_the_mixed_targets():
  targets, logits = mixed_targets(lam=0.7)
  # A row's own class (0.65) and its pair's (0.29) pass 0.2, the others (0.02) do not.
  binary = (targets > 0.2).astype(np.float64)
  assert set(np.unique(binary.sum(-1))) <= {1.0, 2.0} and binary.sum() > len(targets)
  got = step_lib.per_example_loss(jnp.asarray(logits), jnp.asarray(targets, jnp.float32), 'bce',
                                  bce_target_threshold=0.2)
  np.testing.assert_allclose(got, np_bce(logits, binary), rtol=1e-5)


def test_softmax_loss_matches_numpy_on_soft_targets_and_upcasts():
  targets, logits = mixed_targets(seed=1)
  got = step_lib.per_example_loss(jnp.asarray(logits, jnp.bfloat16),
                                  jnp.asarray(targets, jnp.float32))
  assert got.dtype == jnp.float32
  bf16_logits = np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(got, np_softmax_ce(bf16_logits, targets), rtol=1e-5)


@pytest.mark.parametrize('field, value, message', [
    ('loss', 'focal', "config.loss='focal' is not allowed; choose one of ['softmax', 'bce']"),
    ('bce_target_threshold', 1.0, 'config.bce_target_threshold=1.0 must be in [0, 1)'),
    ('bce_target_threshold', -0.2, 'config.bce_target_threshold=-0.2 must be in [0, 1)'),
    ('ema.decay', 1.0, 'config.ema.decay=1.0 must be in [0, 1)'),
    ('ema.decay', -0.5, 'config.ema.decay=-0.5 must be in [0, 1)'),
    ('ema.select_best', 'last', "config.ema.select_best='last' is not allowed; choose one of "
     "['ema', 'raw']"),
    ('mix.mixup_alpha', -1.0, 'config.mix.mixup_alpha=-1.0'),
])
def test_check_config_refuses_and_names_the_field(field, value, message):
  with pytest.raises(ConfigError) as info:
    step_lib.check_config(make_config(**{field: value}))
  assert message in str(info.value)


def test_check_config_allows_the_rsb_values():
  step_lib.check_config(
      make_config(
          **{
              'loss': 'bce',
              'bce_target_threshold': 0.2,
              'ema.decay': 0.9998,
              'ema.select_best': 'raw',
              'mix.mixup_alpha': 0.1,
              'mix.cutmix_alpha': 1.0
          }))
