"""The learning-rate schedule and SGD against the paper's recipe and hand-written SGD."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.errors import ConfigError
from se_flax.train import optim
from tests.train.tiny import IMAGE_SHAPE
from tests.train.tiny import make_config
from tests.train.tiny import TinyNet


def paper_config(**overrides):
  # Sec. 6: lr 0.6 at batch 1024, /10 every 30 epochs; here trained at batch 256.
  fields = {'batch_size': 256, 'learning_rate': 0.6, 'lr_reference_batch': 1024}
  return make_config(**{**fields, **overrides})


def test_step_schedule_matches_paper_recipe():
  steps_per_epoch = 5005  # ImageNet's 1,281,167 images at batch 256
  total = 100 * steps_per_epoch
  _, schedule = optim.create_optimizer(paper_config(), steps_per_epoch, total)
  expected = {
      0: 0.15,
      30 * steps_per_epoch - 1: 0.15,
      30 * steps_per_epoch: 0.015,
      60 * steps_per_epoch - 1: 0.015,
      60 * steps_per_epoch: 0.0015,
      90 * steps_per_epoch: 0.00015,
      total - 1: 0.00015,
  }
  for step, lr in expected.items():
    np.testing.assert_allclose(float(schedule(step)), lr, rtol=1e-6, err_msg=f'step {step}')


def test_step_schedule_at_explicit_boundaries():
  # He et al. 2016 (CIFAR): 0.1 at batch 128, /10 at 50% and 75% of training.
  config = make_config(
      **{
          'batch_size': 128,
          'learning_rate': 0.1,
          'lr_reference_batch': 128,
          'schedule.boundaries_epochs': (80.0, 120.0)
      })
  _, schedule = optim.create_optimizer(config, steps_per_epoch=391, total_steps=160 * 391)
  for step, lr in {
      0: 0.1,
      31279: 0.1,
      31280: 0.01,
      46919: 0.01,
      46920: 0.001,
      160 * 391 - 1: 0.001
  }.items():
    np.testing.assert_allclose(float(schedule(step)), lr, rtol=1e-6, err_msg=f'step {step}')


def test_linear_warmup_then_step_decay():
  config = paper_config(**{'schedule.warmup_epochs': 5.0, 'schedule.step_epochs': 30.0})
  _, schedule = optim.create_optimizer(config, steps_per_epoch=10, total_steps=1000)
  # (s + 1) / 50 of 0.15 during the 50 warm-up steps, then flat until epoch 30.
  for step, lr in {
      0: 0.15 / 50,
      24: 0.15 * 25 / 50,
      49: 0.15,
      50: 0.15,
      299: 0.15,
      300: 0.015
  }.items():
    np.testing.assert_allclose(float(schedule(step)), lr, rtol=1e-6, err_msg=f'step {step}')


def test_cosine_schedule_with_warmup():
  config = paper_config(**{'schedule.name': 'cosine', 'schedule.warmup_epochs': 1.0})
  _, schedule = optim.create_optimizer(config, steps_per_epoch=10, total_steps=110)
  # Warm-up over steps 0..9, then half a cosine over the 100 remaining steps.
  np.testing.assert_allclose(float(schedule(9)), 0.15, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), 0.15, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(60)), 0.075, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(35)), 0.15 * (1 + np.cos(np.pi / 4)) / 2, rtol=1e-5)
  np.testing.assert_allclose(float(schedule(110)), 0.0, atol=1e-9)


@pytest.mark.parametrize('field,value,message', [
    ('schedule.name', 'linear', 'config.schedule.name'),
    ('learning_rate', -0.1, 'config.learning_rate'),
    ('schedule.step_factor', 0.0, 'config.schedule.step_factor'),
    ('schedule.step_factor', 1.5, 'config.schedule.step_factor'),
    ('schedule.warmup_epochs', 20.0, 'config.schedule.warmup_epochs'),
    ('schedule.boundaries_epochs', (5.0, 3.0), 'config.schedule.boundaries_epochs'),
    ('optimizer.name', 'adam', 'config.optimizer.name'),
])
def test_invalid_schedule_fields_are_named(field, value, message):
  with pytest.raises(ValueError, match=message.replace('.', r'\.')):
    optim.create_optimizer(paper_config(**{field: value}), steps_per_epoch=10, total_steps=100)


def test_check_config_without_step_counts_checks_the_fields_only():
  config = paper_config(**{'schedule.warmup_epochs': 20.0})
  optim.check_config(config)
  with pytest.raises(ConfigError) as info:
    optim.check_config(config, steps_per_epoch=10, total_steps=100)
  # The message main.py prints for a warm-up longer than the run.
  assert str(info.value) == ('config.schedule.warmup_epochs=20.0 is longer than the run '
                             '(100 steps = 10 epochs); allowed: 0 to 10')
  with pytest.raises(
      ConfigError, match=r"config\.optimizer\.name='adam' is not allowed; "
      r"choose one of \['sgd', 'adamw', 'lamb'\]"):
    optim.check_config(paper_config(**{'optimizer.name': 'adam'}))


def _tiny_params():
  variables = TinyNet().init(jax.random.PRNGKey(0), jnp.zeros((1,) + IMAGE_SHAPE))
  return variables['params']


def test_weight_decay_mask_excludes_exactly_the_1d_params():
  mask = optim.weight_decay_mask(_tiny_params())
  flat = {
      '/'.join(k.key for k in path): v for path, v in jax.tree_util.tree_flatten_with_path(mask)[0]
  }
  assert flat == {
      'BatchNorm_0/bias': False,
      'BatchNorm_0/scale': False,
      'Conv_0/bias': False,
      'Conv_0/kernel': True,
      'Dense_0/bias': False,
      'Dense_0/kernel': True,
  }


@pytest.mark.parametrize('decay_bn_and_bias', [False, True])
def test_coupled_weight_decay_on_zero_gradient(decay_bn_and_bias):
  config = make_config(**{
      'optimizer.weight_decay': 0.01,
      'optimizer.decay_bn_and_bias': decay_bn_and_bias
  })
  tx, schedule = optim.create_optimizer(config, steps_per_epoch=10, total_steps=100)
  params = _tiny_params()
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  lr = float(schedule(0))
  for (path,
       u), p in zip(jax.tree_util.tree_flatten_with_path(updates)[0], jax.tree.leaves(params)):
    decayed = p.ndim > 1 or decay_bn_and_bias
    expected = -lr * 0.01 * np.asarray(p) if decayed else np.zeros_like(p)
    np.testing.assert_allclose(np.asarray(u), expected, rtol=1e-6, atol=1e-12,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_matches_hand_written_momentum(nesterov):
  # PyTorch/Caffe SGD: g += wd * w; buf = m * buf + g; step = g + m * buf (nesterov) or buf.
  config = make_config(
      **{
          'optimizer.weight_decay': 0.1,
          'optimizer.nesterov': nesterov,
          'optimizer.decay_bn_and_bias': True,
          'optimizer.momentum': 0.9
      })
  tx, schedule = optim.create_optimizer(config, steps_per_epoch=10, total_steps=100)
  w = {'w': jnp.array([[1.0, -2.0], [0.5, 3.0]])}
  opt_state = tx.init(w)
  w_np, buf = np.array(w['w']), np.zeros((2, 2))
  rng = np.random.RandomState(0)
  for step in range(4):
    g = rng.normal(size=(2, 2)).astype(np.float32)
    updates, opt_state = tx.update({'w': jnp.asarray(g)}, opt_state, w)
    w = jax.tree.map(lambda a, b: a + b, w, updates)
    d = g + 0.1 * w_np
    buf = 0.9 * buf + d
    w_np = w_np - float(schedule(step)) * (d + 0.9 * buf if nesterov else buf)
    np.testing.assert_allclose(np.asarray(w['w']), w_np, rtol=1e-5)


# The edges of each rule: the last allowed value passes, the first refused one
# fails with a message naming the field and the value.
@pytest.mark.parametrize('field,value', [
    ('learning_rate', 0.0),
    ('lr_reference_batch', 0),
    ('optimizer.momentum', 1.0),
    ('optimizer.momentum', -0.1),
    ('optimizer.weight_decay', -1e-6),
    ('schedule.warmup_epochs', -1.0),
    ('schedule.step_factor', 1.0001),
    ('schedule.step_epochs', 0.0),
    ('schedule.boundaries_epochs', (0.0, 3.0)),
    ('schedule.boundaries_epochs', (3.0, 3.0)),
])
def test_first_refused_value_names_field_and_value(field, value):
  shown = repr(value) if isinstance(value, tuple) else str(value)
  with pytest.raises(ConfigError, match=rf'^config\.{field.replace(".", r"[.]")}='
                     rf'{re.escape(shown)} must '):
    optim.check_config(paper_config(**{field: value}))


@pytest.mark.parametrize('field,value', [
    ('optimizer.momentum', 0.0),
    ('optimizer.weight_decay', 0.0),
    ('schedule.step_factor', 1.0),
    ('schedule.warmup_epochs', 0.0),
    ('schedule.boundaries_epochs', (0.5,)),
    ('learning_rate', 1e-9),
    ('lr_reference_batch', 1),
])
def test_edge_values_that_are_allowed(field, value):
  optim.check_config(paper_config(**{field: value}), steps_per_epoch=10, total_steps=100)


def test_warmup_as_long_as_the_run_is_allowed_and_one_step_more_is_not():
  optim.check_config(paper_config(**{'schedule.warmup_epochs': 10.0}), 10, 100)
  with pytest.raises(ConfigError, match='longer than the run'):
    optim.check_config(paper_config(**{'schedule.warmup_epochs': 10.1}), 10, 100)


@pytest.mark.parametrize(
    'steps_per_epoch,total_steps,message',
    [
        (0, 100, 'steps_per_epoch=0 must be > 0'),
        (10, 0, 'total_steps=0 must be > 0 (config.num_epochs / config.num_train_steps)'),
        # One count given without the other: the missing one is named, not skipped.
        (10, None, 'total_steps=None must be > 0 (config.num_epochs / config.num_train_steps)'),
        (None, 100, 'steps_per_epoch=None must be > 0'),
    ])
def test_step_counts_must_be_positive(steps_per_epoch, total_steps, message):
  with pytest.raises(ConfigError) as info:
    optim.check_config(paper_config(), steps_per_epoch, total_steps)
  assert str(info.value) == message


def test_one_step_per_epoch_and_one_step_in_all_are_allowed():
  # The smallest counts (a tiny data set, a smoke run): one update at the full rate.
  _, schedule = optim.create_optimizer(paper_config(), steps_per_epoch=1, total_steps=1)
  np.testing.assert_allclose(float(schedule(0)), 0.15, rtol=1e-6)


def test_unordered_boundaries_message_names_the_rule():
  with pytest.raises(ConfigError) as info:
    optim.check_config(paper_config(**{'schedule.boundaries_epochs': (5.0, 3.0)}))
  assert str(info.value) == ('config.schedule.boundaries_epochs=(5.0, 3.0) must be positive '
                             'and strictly increasing')


def test_one_step_long_decay_and_cosine():
  # step_epochs * steps_per_epoch = 1: the rate is divided at every step.
  config = paper_config(**{'schedule.step_epochs': 0.1, 'schedule.step_factor': 0.5})
  _, schedule = optim.create_optimizer(config, steps_per_epoch=10, total_steps=5)
  np.testing.assert_allclose([float(schedule(s)) for s in range(3)], [0.15, 0.075, 0.0375],
                             rtol=1e-6)
  # A cosine part one step long: base right after warm-up, then 0.
  config = paper_config(**{'schedule.name': 'cosine', 'schedule.warmup_epochs': 0.4})
  _, schedule = optim.create_optimizer(config, steps_per_epoch=10, total_steps=5)
  np.testing.assert_allclose(float(schedule(4)), 0.15, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(5)), 0.0, atol=1e-9)


def test_one_warmup_step_starts_at_the_full_rate():
  config = paper_config(**{'schedule.warmup_epochs': 0.1})
  _, schedule = optim.create_optimizer(config, steps_per_epoch=10, total_steps=100)
  np.testing.assert_allclose(float(schedule(0)), 0.15, rtol=1e-6)


def test_cosine_stays_at_zero_past_the_end():
  config = paper_config(**{'schedule.name': 'cosine'})
  _, schedule = optim.create_optimizer(config, steps_per_epoch=10, total_steps=100)
  for step in (100, 150, 200, 300):
    np.testing.assert_allclose(float(schedule(step)), 0.0, atol=1e-9, err_msg=f'step {step}')


def timm_cosine_reference(epoch, base, warmup_epochs, warmup_lr, min_lr, cosine_epochs):
  """timm's CosineLRScheduler._get_lr(epoch) (warmup_prefix=False, one cycle), in float64."""
  if epoch < warmup_epochs:
    return warmup_lr + epoch * (base - warmup_lr) / warmup_epochs
  if epoch < cosine_epochs:
    return min_lr + 0.5 * (base - min_lr) * (1 + np.cos(np.pi * epoch / cosine_epochs))
  return min_lr


def test_timm_cosine_holds_each_epochs_rate_and_ends_in_the_cooldown():
  # 20 epochs of 4 steps: 3 warm-up epochs from 0.01, the cosine over 15, 5 at the floor.
  config = paper_config(
      **{
          'schedule.name': 'timm_cosine',
          'schedule.warmup_epochs': 3.0,
          'schedule.warmup_lr': 0.01,
          'schedule.min_lr': 0.001,
          'schedule.cooldown_epochs': 5.0
      })
  _, schedule = optim.create_optimizer(config, steps_per_epoch=4, total_steps=80)
  got = np.asarray(schedule(np.arange(80)), np.float64).reshape(20, 4)
  # One rate per epoch, the one its first update gets (timm steps its scheduler per epoch).
  np.testing.assert_array_equal(got, np.repeat(got[:, :1], 4, axis=1))
  expected = [timm_cosine_reference(e, 0.15, 3, 0.01, 0.001, 15) for e in range(20)]
  np.testing.assert_allclose(got[:, 0], expected, rtol=1e-5)
  assert got[0, 0] == pytest.approx(0.01) and got[3, 0] < 0.15  # the cosine counts from epoch 0
  np.testing.assert_allclose(got[15:, 0], 0.001, rtol=1e-6)


def test_cosine_floor_cooldown_and_warmup_start():
  # The per-update cosine with timm's ends: warm-up from 0.03, down to 0.003 at step 80, held.
  config = paper_config(
      **{
          'schedule.name': 'cosine',
          'schedule.warmup_epochs': 1.0,
          'schedule.warmup_lr': 0.03,
          'schedule.min_lr': 0.003,
          'schedule.cooldown_epochs': 2.0
      })
  _, schedule = optim.create_optimizer(config, steps_per_epoch=10, total_steps=100)
  np.testing.assert_allclose(float(schedule(0)), 0.03 + (0.15 - 0.03) / 10, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(9)), 0.15, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(45)), 0.003 + (0.15 - 0.003) / 2, rtol=1e-5)
  for step in (80, 90, 99):
    np.testing.assert_allclose(float(schedule(step)), 0.003, rtol=1e-5, err_msg=f'step {step}')


def test_the_ends_at_zero_leave_the_cosine_as_it_was():
  plain = paper_config(**{'schedule.name': 'cosine', 'schedule.warmup_epochs': 1.0})
  ends = paper_config(
      **{
          'schedule.name': 'cosine',
          'schedule.warmup_epochs': 1.0,
          'schedule.warmup_lr': 0.0,
          'schedule.min_lr': 0.0,
          'schedule.cooldown_epochs': 0.0
      })
  del plain.schedule['warmup_lr'], plain.schedule['min_lr'], plain.schedule['cooldown_epochs']
  steps = np.arange(110)
  rates = [np.asarray(optim.create_schedule(c, 10, 110)(steps)) for c in (plain, ends)]
  np.testing.assert_array_equal(rates[0], rates[1])


@pytest.mark.parametrize('scaling,expected', [('linear', 0.6 / 4), ('sqrt', 0.6 / 2)])
def test_the_rate_moves_with_the_batch_by_lr_scaling(scaling, expected):
  # Batch 256 against the reference 1024: a quarter of the rate, or half under the square root.
  config = paper_config(lr_scaling=scaling)
  assert optim.base_learning_rate(config) == pytest.approx(expected)


@pytest.mark.parametrize('fields,message', [
    ({
        'lr_scaling': 'log'
    }, "config.lr_scaling='log' is not allowed; choose one of "
     "['linear', 'sqrt']"),
    ({
        'schedule.min_lr': -1e-6
    }, 'config.schedule.min_lr=-1e-06 must be >= 0'),
    ({
        'schedule.cooldown_epochs': -1.0
    }, 'config.schedule.cooldown_epochs=-1.0 must be >= 0'),
    ({
        'schedule.name': 'timm_cosine',
        'schedule.cooldown_epochs': 10.0
    }, 'config.schedule.cooldown_epochs=10.0 leaves no cosine in a run of 10 epochs'),
])
def test_refused_schedule_ends_and_scalings_are_named(fields, message):
  with pytest.raises(ConfigError) as info:
    optim.check_config(paper_config(**fields), steps_per_epoch=10, total_steps=100)
  assert message in str(info.value)


def test_a_step_decay_warms_up_from_warmup_lr_and_ignores_the_cosines_ends():
  # A recipe's cosine settings may stay when only schedule.name changes.
  fields = {'schedule.warmup_epochs': 1.0, 'schedule.step_epochs': 5.0}
  ends = {'schedule.warmup_lr': 0.05, 'schedule.min_lr': 0.01, 'schedule.cooldown_epochs': 20.0}
  plain = optim.create_schedule(paper_config(**fields), 10, 100)
  schedule = optim.create_schedule(paper_config(**fields, **ends), 10, 100)
  np.testing.assert_allclose(float(schedule(0)), 0.05 + (0.15 - 0.05) / 10, rtol=1e-6)
  steps = np.arange(10, 100)
  np.testing.assert_array_equal(np.asarray(schedule(steps)), np.asarray(plain(steps)))
