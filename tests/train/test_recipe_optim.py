"""AdamW, LAMB and gradient clipping against numpy versions of the published update rules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from se_flax.errors import ConfigError
from se_flax.train import optim
from tests.train.tiny import make_config

LR = 0.01


def recipe_config(**overrides):
  """A constant rate of LR for the first updates (step schedule, no warm-up)."""
  return make_config(**{
      'learning_rate': LR,
      'schedule.name': 'step',
      'schedule.warmup_epochs': 0.0,
      **overrides
  })


def make_tx(**overrides):
  tx, _ = optim.create_optimizer(recipe_config(**overrides), steps_per_epoch=10, total_steps=100)
  return tx


def tiny_tree():
  """A kernel (decays), a bias (1-D: no decay unless decay_bn_and_bias) and their gradients."""
  rng = np.random.RandomState(0)
  params = {'kernel': rng.normal(size=(3, 4)), 'bias': rng.normal(size=(4,))}
  grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(2)]
  return params, grads


def run_tx(tx, params, grads):
  """params after applying `grads` one after the other, as float64 numpy."""
  p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  state = tx.init(p)
  for g in grads:
    updates, state = tx.update({k: jnp.asarray(v, jnp.float32) for k, v in g.items()}, state, p)
    p = {k: p[k] + updates[k] for k in p}
  return {k: np.asarray(v, np.float64) for k, v in p.items()}


def adam_direction(m, v, g, t, b1, b2, eps):
  """Adam's moments and bias-corrected step (Kingma & Ba 2015, eps outside the root)."""
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g * g
  m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
  return m, v, m_hat / (np.sqrt(v_hat) + eps)


def numpy_adaptive(params, grads, *, wd, decays, lamb, b1=0.9, b2=0.999, eps=1e-8):
  """AdamW (Loshchilov & Hutter 2019, PyTorch form) or LAMB (You et al. 2020, Alg. 2).

  AdamW: w -= lr * (adam + wd * w). LAMB: u = adam + wd * w; w -= lr * ||w|| / ||u|| * u,
  with the ratio 1 when a norm is 0; the trust ratio applies where the weights decay (timm).
  """
  p = {k: v.copy() for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  for t, g in enumerate(grads, start=1):
    for k in p:
      m[k], v[k], direction = adam_direction(m[k], v[k], g[k], t, b1, b2, eps)
      u = direction + (wd * p[k] if decays[k] else 0.0)
      ratio = 1.0
      if lamb and decays[k]:
        w_norm, u_norm = np.linalg.norm(p[k]), np.linalg.norm(u)
        ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
      p[k] = p[k] - LR * ratio * u
  return p


@pytest.mark.parametrize('decay_bn_and_bias', [False, True])
def test_adamw_matches_numpy(decay_bn_and_bias):
  params, grads = tiny_tree()
  tx = make_tx(
      **{
          'optimizer.name': 'adamw',
          'optimizer.weight_decay': 0.05,
          'optimizer.decay_bn_and_bias': decay_bn_and_bias
      })
  expected = numpy_adaptive(params, grads, wd=0.05, lamb=False, decays={
      'kernel': True,
      'bias': decay_bn_and_bias
  })
  got = run_tx(tx, params, grads)
  for k in params:
    np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize('decay_bn_and_bias', [False, True])
def test_lamb_matches_numpy(decay_bn_and_bias):
  params, grads = tiny_tree()
  tx = make_tx(
      **{
          'optimizer.name': 'lamb',
          'optimizer.weight_decay': 0.02,
          'optimizer.b1': 0.8,
          'optimizer.b2': 0.99,
          'optimizer.eps': 1e-6,
          'optimizer.decay_bn_and_bias': decay_bn_and_bias
      })
  expected = numpy_adaptive(params, grads, wd=0.02, lamb=True, b1=0.8, b2=0.99, eps=1e-6, decays={
      'kernel': True,
      'bias': decay_bn_and_bias
  })
  got = run_tx(tx, params, grads)
  for k in params:
    np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)
  # The trust ratio matters here: plain AdamW moves the kernel elsewhere.
  adamw = numpy_adaptive(params, grads, wd=0.02, lamb=False, b1=0.8, b2=0.99, eps=1e-6, decays={
      'kernel': True,
      'bias': decay_bn_and_bias
  })
  assert not np.allclose(got['kernel'], adamw['kernel'], rtol=1e-3)


@pytest.mark.parametrize('name', ['adamw', 'lamb'])
def test_b1_b2_eps_reach_the_optimizer(name):
  # Far from optax's own defaults (0.9, 0.999, 1e-8), so a field left unpassed would show.
  params, grads = tiny_tree()
  fields = {'b1': 0.5, 'b2': 0.9, 'eps': 0.1}
  tx = make_tx(
      **{
          'optimizer.name': name,
          'optimizer.weight_decay': 0.05,
          'optimizer.decay_bn_and_bias': True,
          **{
              f'optimizer.{k}': v for k, v in fields.items()
          }
      })
  decays = {'kernel': True, 'bias': True}
  expected = numpy_adaptive(params, grads, wd=0.05, decays=decays, lamb=name == 'lamb', **fields)
  got = run_tx(tx, params, grads)
  for k in params:
    np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)
  for field, default in {'b1': 0.9, 'b2': 0.999, 'eps': 1e-8}.items():
    other = numpy_adaptive(params, grads, wd=0.05, decays=decays, lamb=name == 'lamb', **{
        **fields, field: default
    })
    assert not np.allclose(got['kernel'], other['kernel'], rtol=1e-4, atol=1e-6), field


@pytest.mark.parametrize('clip', [0.5, 100.0])
def test_clipping_rescales_the_raw_gradient_before_the_coupled_decay(clip):
  params, grads = tiny_tree()
  wd = 0.1
  tx = make_tx(
      **{
          'optimizer.grad_clip_norm': clip,
          'optimizer.momentum': 0.0,
          'optimizer.weight_decay': wd,
          'optimizer.decay_bn_and_bias': True
      })
  g = grads[0]
  norm = np.sqrt(sum((x ** 2).sum() for x in g.values()))
  scale = min(1.0, clip / norm)
  got = run_tx(tx, params, [g])
  for k in params:
    expected = params[k] - LR * (g[k] * scale + wd * params[k])
    np.testing.assert_allclose(got[k], expected, rtol=1e-5, atol=1e-6, err_msg=k)
  assert (scale < 1.0) == (clip == 0.5)  # one case clips, the other leaves the gradient alone


def test_no_clipping_leaves_the_sgd_state_as_it_was():
  # The optimizer state is in every checkpoint: runs without the new fields keep its layout.
  params, _ = tiny_tree()
  sgd = make_tx()
  clipped = make_tx(**{'optimizer.grad_clip_norm': 1.0})
  p = {k: jnp.asarray(v) for k, v in params.items()}
  assert len(sgd.init(p)) == 2 and len(clipped.init(p)) == 3
  # No decay, no decay slot: the state is plain SGD's alone.
  no_decay = make_tx(**{'optimizer.weight_decay': 0.0})
  assert (jax.tree.structure(no_decay.init(p)) == jax.tree.structure(
      optax.chain(optax.sgd(lambda count: LR, momentum=0.9)).init(p)))


@pytest.mark.parametrize('field,value,message', [
    ('optimizer.b1', 1.0, 'config.optimizer.b1=1.0 must be in [0, 1)'),
    ('optimizer.b2', -0.1, 'config.optimizer.b2=-0.1 must be in [0, 1)'),
    ('optimizer.eps', 0.0, 'config.optimizer.eps=0.0 must be positive'),
    ('optimizer.grad_clip_norm', -1.0,
     'config.optimizer.grad_clip_norm=-1.0 must be >= 0 (0 turns clipping off)'),
])
def test_refused_adaptive_fields_are_named(field, value, message):
  with pytest.raises(ConfigError) as info:
    optim.check_config(recipe_config(**{'optimizer.name': 'adamw', field: value}))
  assert message in str(info.value)


def test_sgd_momentum_fields_leave_adamw_alone():
  # A config file's sgd settings (digits: nesterov) may stay when only the name changes.
  params, grads = tiny_tree()
  runs = [
      run_tx(
          make_tx(**{
              'optimizer.name': 'adamw',
              'optimizer.nesterov': nesterov,
              'optimizer.momentum': momentum
          }), params, grads) for nesterov, momentum in ((False, 0.9), (True, 0.0))
  ]
  for k in params:
    np.testing.assert_array_equal(runs[0][k], runs[1][k])


def test_edge_values_allowed():
  optim.check_config(
      recipe_config(
          **{
              'optimizer.name': 'adamw',
              'optimizer.b1': 0.0,
              'optimizer.b2': 0.0,
              'optimizer.grad_clip_norm': 0.0
          }))
