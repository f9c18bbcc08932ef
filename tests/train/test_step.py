"""train_step / eval_step against numpy, across meshes, and under the NaN policies."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from se_flax.data import datasets
from se_flax.errors import ConfigError
from se_flax.train import parallel
from se_flax.train import state as state_lib
from se_flax.train import step as step_lib
from se_flax.train.state import TrainState
from tests.train.tiny import IMAGE_SHAPE
from tests.train.tiny import make_batch
from tests.train.tiny import make_config
from tests.train.tiny import NUM_CLASSES
from tests.train.tiny import tiny_setup
from tests.train.tiny import TinyNet


def np_log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_label_smoothed_cross_entropy_matches_numpy():
  rng = np.random.RandomState(0)
  logits = rng.normal(size=(6, 7)).astype(np.float32) * 3
  labels = rng.randint(0, 7, size=6)
  eps, k = 0.1, 7
  targets = np.full((6, k), eps / k)
  targets[np.arange(6), labels] += 1 - eps
  expected = -(targets * np_log_softmax(logits.astype(np.float64))).sum(-1)
  got = step_lib.cross_entropy(jnp.asarray(logits), labels, k, eps)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # bfloat16 logits are upcast before the softmax, so the loss is float32.
  assert step_lib.cross_entropy(jnp.asarray(logits, jnp.bfloat16), labels, k,
                                eps).dtype == jnp.float32


def test_topk_correct_matches_numpy():
  rng = np.random.RandomState(1)
  logits = rng.normal(size=(50, 20)).astype(np.float32)
  labels = rng.randint(0, 20, size=50)
  order = np.argsort(-logits, axis=-1)
  top1, top5 = step_lib.topk_correct(jnp.asarray(logits), jnp.asarray(labels), 20)
  np.testing.assert_array_equal(top1, order[:, 0] == labels)
  np.testing.assert_array_equal(top5, (order[:, :5] == labels[:, None]).any(-1))
  # With 3 classes every label is in the top 5.
  _, top5_small = step_lib.topk_correct(jnp.asarray(logits[:, :3]), jnp.asarray(labels % 3), 3)
  assert np.all(np.asarray(top5_small) == 1)


def test_topk_correct_breaks_ties_by_the_lower_index_as_top_k_does():
  rng = np.random.RandomState(2)
  logits = rng.randint(0, 4, size=(200, 12)).astype(np.float32)  # many ties
  labels = rng.randint(0, 12, size=200)
  order = np.argsort(-logits, axis=-1, kind='stable')
  top1, top5 = step_lib.topk_correct(jnp.asarray(logits), jnp.asarray(labels), 12)
  np.testing.assert_array_equal(top1, order[:, 0] == labels)
  np.testing.assert_array_equal(top5, (order[:, :5] == labels[:, None]).any(-1))


def test_train_step_on_8_devices_equals_1_device(mesh8):
  # Equal only if BatchNorm uses the statistics of the whole 16-example batch.
  results = []
  for n in (1, 8):
    setup = tiny_setup(n)
    state = setup.state
    for seed in range(2):
      state, metrics = setup.train(state, parallel.global_batch(make_batch(seed=seed), setup.mesh))
    results.append(jax.device_get((state, metrics)))
  (s1, m1), (s8, m8) = results
  np.testing.assert_allclose(m1['loss_sum'], m8['loss_sum'], rtol=1e-5)
  assert m8['count'] == 16 and m8['finite'] == 1 and int(s8.step) == 2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               (s1.params, s1.batch_stats, s1.opt_state), (s8.params, s8.batch_stats, s8.opt_state))


def test_train_step_metrics_match_numpy(mesh8):
  setup = tiny_setup(label_smoothing=0.1)
  model, state, train, schedule = setup.model, setup.state, setup.train, setup.schedule
  # Running statistics away from their initial values, so the step must start from the state's.
  state = state.replace(batch_stats=jax.tree.map(lambda x: x + 0.5, state.batch_stats))
  batch = make_batch(seed=3)
  variables = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  apply = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))
  logits, updated = apply(variables, batch['image'])
  logits = np.asarray(logits, np.float64)
  targets = np.full(logits.shape, 0.1 / NUM_CLASSES)
  targets[np.arange(16), batch['label']] += 0.9
  order = np.argsort(-logits, axis=-1)
  new_state, metrics = train(state, parallel.global_batch(batch, mesh8))
  metrics = jax.device_get(metrics)
  np.testing.assert_allclose(metrics['loss_sum'], -(targets * np_log_softmax(logits)).sum(),
                             rtol=1e-5)
  assert metrics['top1_correct'] == (order[:, 0] == batch['label']).sum()
  assert metrics['top5_correct'] == (order[:, :5] == batch['label'][:, None]).any(-1).sum()
  np.testing.assert_allclose(metrics['learning_rate'], float(schedule(0)))
  assert metrics['grad_norm_sum'] > 0 and metrics['steps'] == 1 and metrics['skipped'] == 0
  assert int(new_state.step) == 1
  # The new BatchNorm statistics are the model's own training-mode update.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               jax.device_get(new_state.batch_stats), jax.device_get(updated['batch_stats']))


def test_eval_counts_on_padded_masked_batches_match_numpy(mesh8):
  setup = tiny_setup()
  model, state = setup.model, setup.state
  evaluate = step_lib.make_eval_step(model, mesh8, NUM_CLASSES)
  variables = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  # A split of 21 examples in two batches of 16; the last is padded with NaN images.
  split = make_batch(batch_size=21, seed=5)
  totals = {'count': 0.0, 'top1_correct': 0.0, 'top5_correct': 0.0, 'loss_sum': 0.0}
  for start in (0, 16):
    real = min(16, 21 - start)
    batch = {
        'image': np.full((16,) + IMAGE_SHAPE, np.nan, np.float32),
        'label': np.zeros(16, np.int32),
        'mask': (np.arange(16) < real).astype(np.float32),
    }
    batch['image'][:real] = split['image'][start:start + real]
    batch['label'][:real] = split['label'][start:start + real]
    out = jax.device_get(evaluate(state, parallel.global_batch(batch, mesh8)))
    for k in totals:
      totals[k] += float(out[k])
  apply = jax.jit(functools.partial(model.apply, train=False))
  logits = np.asarray(apply(variables, split['image']), np.float64)
  order = np.argsort(-logits, axis=-1)
  assert totals['count'] == 21
  assert totals['top1_correct'] == (order[:, 0] == split['label']).sum()
  assert totals['top5_correct'] == (order[:, :5] == split['label'][:, None]).any(-1).sum()
  expected_loss = -np_log_softmax(logits)[np.arange(21), split['label']].sum()
  np.testing.assert_allclose(totals['loss_sum'], expected_loss, rtol=1e-5)


def _nan_batch(mesh):
  batch = make_batch(seed=7)
  batch['image'][3, 0, 0, 0] = np.nan
  return parallel.global_batch(batch, mesh)


def test_nan_policy_stop_returns_the_old_state(mesh8):
  setup = tiny_setup(nan_policy='stop')
  state, train = setup.state, setup.train
  state, _ = train(state, parallel.global_batch(make_batch(), mesh8))
  before = jax.device_get(state)  # the input state is donated
  after, metrics = train(state, _nan_batch(mesh8))
  assert float(metrics['finite']) == 0.0
  after = jax.device_get(after)
  assert int(after.step) == int(before.step) == 1
  jax.tree.map(np.testing.assert_array_equal, (after.params, after.batch_stats, after.opt_state),
               (before.params, before.batch_stats, before.opt_state))


def test_nan_policy_skip_keeps_params_and_advances(mesh8):
  setup = tiny_setup(nan_policy='skip')
  state, train = setup.state, setup.train
  state, _ = train(state, parallel.global_batch(make_batch(), mesh8))
  before = jax.device_get(state)
  state, metrics = train(state, _nan_batch(mesh8))
  metrics = jax.device_get(metrics)
  after = jax.device_get(state)
  assert metrics['finite'] == 0 and metrics['skipped'] == 1
  # The skipped step adds nothing to the running sums, so means stay finite.
  assert metrics['loss_sum'] == 0 and metrics['count'] == 0
  assert int(after.step) == 2
  jax.tree.map(np.testing.assert_array_equal, (after.params, after.batch_stats, after.opt_state),
               (before.params, before.batch_stats, before.opt_state))
  state, metrics = train(state, parallel.global_batch(make_batch(seed=8), mesh8))
  assert float(metrics['finite']) == 1 and float(metrics['skipped']) == 0 and int(state.step) == 3
  # Only one update was applied before this one, so the schedule is at 1, not 2.
  assert float(metrics['learning_rate']) == float(setup.schedule(1))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))


def test_unknown_nan_policy_is_named(mesh8):
  with pytest.raises(ValueError, match=r'config\.nan_policy'):
    step_lib.make_train_step(TinyNet(), make_config(nan_policy='ignore'), mesh8, lambda s: 0.1,
                             NUM_CLASSES)


@pytest.mark.parametrize('field, value, message', [
    ('nan_policy', 'ignore', "config.nan_policy='ignore' is not allowed; choose one of "
     "['stop', 'skip']"),
    ('label_smoothing', 1.0, 'config.label_smoothing=1.0 must be in [0, 1)'),
    ('label_smoothing', -0.1, 'config.label_smoothing=-0.1 must be in [0, 1)'),
])
def test_check_config_names_the_field(field, value, message):
  with pytest.raises(ConfigError) as info:
    step_lib.check_config(make_config(**{field: value}))
  assert str(info.value) == message


def test_dropout_masks_are_a_function_of_the_step(mesh8):
  setup = tiny_setup(dropout_rate=0.5)
  state, train = setup.state, setup.train
  batch = parallel.global_batch(make_batch(), mesh8)
  same = jax.tree.map(jnp.copy, state)
  later = jax.tree.map(jnp.copy, state).replace(step=jnp.int32(7))
  losses = [float(train(s, batch)[1]['loss_sum']) for s in (state, same, later)]
  # A resumed run redraws the same masks; another step draws new ones.
  assert losses[0] == losses[1] != losses[2]


def test_model_input_normalises_pixels_as_the_host_did():
  pixels = np.random.RandomState(0).randint(0, 256, size=(4, 5, 5, 3)).astype(np.uint8)
  mean, std = datasets.CIFAR10_MEAN, datasets.CIFAR10_STD
  host = (pixels.astype(np.float32) - np.float32(mean)) / np.float32(std)
  out = jax.jit(lambda x: step_lib.model_input(x, mean, std))(pixels)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), host, rtol=1e-6, atol=1e-6)
  normalised = np.asarray(host)
  assert step_lib.model_input(normalised, mean, std) is normalised  # floats pass as they are


def test_train_step_on_uint8_pixels_equals_the_host_normalised_step(mesh8):
  # The step's config names cifar10, so uint8 images are normalised with its statistics.
  pixels = np.random.RandomState(5).randint(0, 256, size=(16,) + IMAGE_SHAPE).astype(np.uint8)
  labels = make_batch(seed=5)['label']
  host = (pixels.astype(np.float32) - np.float32(datasets.CIFAR10_MEAN)) / np.float32(
      datasets.CIFAR10_STD)
  results = []
  for image in (pixels, host):
    setup = tiny_setup(**{'dataset.name': 'cifar10'})
    batch = parallel.global_batch({'image': image, 'label': labels}, mesh8)
    assert batch['image'].dtype == image.dtype
    results.append(jax.device_get(setup.train(setup.state, batch)))
  (s_u8, m_u8), (s_f32, m_f32) = results
  for key in m_u8:
    np.testing.assert_allclose(m_u8[key], m_f32[key], rtol=1e-5, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), s_u8.params,
               s_f32.params)


@pytest.mark.parametrize('field, value, message', [
    ('loss', 'focal', "config.loss='focal' is not allowed; choose one of ['softmax', 'bce']"),
    ('bce_target_threshold', 1.0,
     'config.bce_target_threshold=1.0 must be in [0, 1) (0 keeps the soft targets)'),
    ('ema.decay', -0.5, 'config.ema.decay=-0.5 must be in [0, 1) (0 turns the EMA off)'),
    ('ema.select_best', 'last',
     "config.ema.select_best='last' is not allowed; choose one of ['ema', 'raw']"),
])
def test_check_config_messages_in_full(field, value, message):
  # The whole line main.py prints, the hint in brackets included.
  with pytest.raises(ConfigError) as info:
    step_lib.check_config(make_config(**{field: value}))
  assert str(info.value) == message


def test_model_input_without_statistics_passes_pixels_through():
  pixels = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
  assert step_lib.model_input(pixels) is pixels


def test_eval_without_mask_counts_every_row():
  logits = jnp.asarray(np.random.RandomState(9).normal(size=(5, 4)), jnp.float32)
  labels = jnp.asarray([0, 1, 2, 3, 0])
  state = types.SimpleNamespace(params={}, batch_stats={})

  def apply(variables, x, train):
    assert train is False  # the inference mode of BatchNorm and dropout
    return x

  out = step_lib.eval_step(state, {'image': logits, 'label': labels}, apply_fn=apply, num_classes=4)
  assert float(out['count']) == 5
  expected = -np_log_softmax(np.asarray(logits, np.float64))[np.arange(5), np.asarray(labels)]
  np.testing.assert_allclose(float(out['loss_sum']), expected.sum(), rtol=1e-5)


# A linear "model" on hand-made states, to put a non-finite value in one place at a time.
# logits = x @ sqrt(w): w = 0 gives a finite loss and an infinite gradient.
_X = np.random.RandomState(4).uniform(1, 2, size=(6, 4)).astype(np.float32)
_LABELS = np.array([0, 1, 2, 0, 1, 2])


def _linear_loss(params):
  return step_lib.cross_entropy(_X @ jnp.sqrt(params['w']), _LABELS, 3).mean()


def _linear_step(tx, w, new_stats, ema=False, step=0, schedule_fn=lambda s: 0.1, **kwargs):

  def apply(variables, images, train, mutable, rngs):
    assert train is True and mutable == ['batch_stats'] and 'dropout' in rngs
    # Like flax, no batch_stats collection at all for a model without BatchNorm.
    return (images @ jnp.sqrt(variables['params']['w']), {
        'batch_stats': new_stats
    } if new_stats else {})

  params = {'w': jnp.asarray(w, jnp.float32)}
  state = TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                     batch_stats=jax.tree.map(jnp.zeros_like, new_stats), opt_state=tx.init(params),
                     rng=jax.random.PRNGKey(0), tx=tx)
  if ema:
    state = state_lib.with_ema(state)
  batch = {'image': jnp.asarray(_X), 'label': jnp.asarray(_LABELS)}
  return state, step_lib.train_step(state, batch, apply_fn=apply, schedule_fn=schedule_fn,
                                    num_classes=3, **kwargs)


# The optimizers are made in the test: nothing may run jax while pytest collects
# (mutmut forks its test processes from one that has collected them).
@pytest.mark.parametrize(
    'case, make_tx, w, new_stats',
    [
        # Every value finite, and no BatchNorm statistics at all: the update is applied.
        ('none', lambda: optax.sgd(0.1), np.full((4, 3), 0.25), {}),
        # A finite loss with an infinite gradient; the optimizer leaves the weights finite.
        ('gradient', optax.set_to_zero, np.where(np.eye(4, 3) > 0, 0.0, 0.25), {}),
        # Statistics that overflowed while the loss and gradient did not.
        ('statistics', lambda: optax.sgd(0.1), np.full((4, 3), 0.25), {
            'var': np.array([1.0, np.inf], np.float32)
        }),
        # Finite gradients, but a rate so large that the update overflows the weights.
        ('weights', lambda: optax.sgd(1e38), np.full((4, 3), 1e-4), {}),
    ])
def test_each_non_finite_part_alone_stops_the_update(case, make_tx, w, new_stats):
  grads = jax.grad(_linear_loss)({'w': jnp.asarray(w, jnp.float32)})
  assert np.isfinite(np.asarray(grads['w'])).all() == (case != 'gradient')
  if case == 'weights':  # the update overflows by itself
    with np.errstate(over='ignore'):
      assert not np.isfinite(w.astype(np.float32) - np.float32(1e38) * np.asarray(grads['w'])).all()
  state, (new_state, metrics) = _linear_step(make_tx(), w, new_stats)
  assert np.isfinite(float(metrics['loss_sum']))  # `stop` reports the step's sums as they are
  assert np.isfinite(float(metrics['grad_norm_sum'])) == (case != 'gradient')
  moved = np.asarray(new_state.params['w']) - np.asarray(state.params['w'])
  if case == 'none':
    assert float(metrics['finite']) == 1 and int(new_state.step) == 1 and np.all(moved != 0)
    assert new_state.batch_stats == {}
  else:  # the old state comes back
    assert float(metrics['finite']) == 0 and int(new_state.step) == 0
    np.testing.assert_array_equal(moved, 0.0)


def test_ema_moves_with_each_applied_update():
  # config.ema.decay reaches the step: ema = d * ema + (1 - d) * new weights.
  setup = tiny_setup(1, **{'ema.decay': 0.8})
  state = state_lib.with_ema(setup.state)
  before = jax.device_get(state.params)
  state, _ = setup.train(state, parallel.global_batch(make_batch(), setup.mesh))
  after = jax.device_get(state.params)
  expected = jax.tree.map(lambda b, a: 0.8 * np.float64(b) + 0.2 * np.float64(a), before, after)
  jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7),
               jax.device_get(state.ema_params), expected)


def test_train_step_donates_the_state_not_the_batch(mesh8):
  # Only the returned state may be used: the input's buffers are reused for it.
  setup = tiny_setup()
  batch = parallel.global_batch(make_batch(), mesh8)
  old = setup.state
  setup.train(old, batch)
  assert all(x.is_deleted() for x in jax.tree.leaves(old.params))
  assert not any(x.is_deleted() for x in jax.tree.leaves(batch))


def test_train_step_defaults_are_plain_softmax_without_smoothing_or_ema_averaging():
  # Called without the config's fields: softmax on one-hot targets, bce without a
  # threshold, and an EMA with decay 0 (it is the weights themselves).
  w = np.full((4, 3), 0.25)
  logits = _X.astype(np.float64) @ np.sqrt(w)
  one_hot = np.eye(3)[_LABELS]
  _, (_, metrics) = _linear_step(optax.sgd(0.1), w, {})
  np.testing.assert_allclose(float(metrics['loss_sum']), -(one_hot * np_log_softmax(logits)).sum(),
                             rtol=1e-5)
  _, (_, metrics) = _linear_step(optax.sgd(0.1), w, {}, loss='bce')
  bce = np.logaddexp(0.0, logits) - one_hot * logits  # -t log s(x) - (1 - t) log(1 - s(x))
  np.testing.assert_allclose(float(metrics['loss_sum']), bce.mean(-1).sum(), rtol=1e-5)
  _, (new_state, _) = _linear_step(optax.sgd(0.1), w, {}, ema=True)
  np.testing.assert_allclose(new_state.ema_params['w'], new_state.params['w'], rtol=1e-6)
  assert not np.allclose(new_state.params['w'], w)


def test_steps_split_the_batch_over_data_and_replicate_the_rest(mesh8):
  # Host batches are split as they enter; state and metrics are whole on every device.
  setup = tiny_setup()
  batch = make_batch()
  evaluate = step_lib.make_eval_step(setup.model, mesh8, NUM_CLASSES)
  eval_batch = {**batch, 'mask': np.ones(16, np.float32)}
  for step, b in ((setup.train, batch), (evaluate, eval_batch)):
    compiled = step.lower(jax.device_get(setup.state), b).compile()  # host arrays, as restored
    (state_in, batch_in), _ = compiled.input_shardings
    for x in jax.tree.leaves(batch_in):
      assert x.is_equivalent_to(parallel.batch_sharding(mesh8), 1)
    for x in jax.tree.leaves((state_in, compiled.output_shardings)):
      assert x.is_fully_replicated and len(x.device_set) == 8


def test_the_reported_rate_is_that_of_the_updates_applied():
  # Five steps, none applied (all skipped): the optimizer's count, not the step, is
  # what its schedule sees. An optimizer without a count falls back on the step.
  def rate(count):
    return 0.1 + 0.01 * jnp.asarray(count, jnp.float32)

  w = np.full((4, 3), 0.25)
  for tx, used in ((optax.sgd(rate), 0), (optax.sgd(0.1), 5)):
    _, (_, metrics) = _linear_step(tx, w, {}, step=5, schedule_fn=rate)
    np.testing.assert_allclose(float(metrics['learning_rate']), 0.1 + 0.01 * used, rtol=1e-6)


def test_one_hot_targets_default_to_no_smoothing():
  got = step_lib.one_hot_targets(jnp.asarray([2, 0]), 3)
  np.testing.assert_array_equal(np.asarray(got), np.eye(3)[[2, 0]])


@pytest.mark.parametrize('nan_policy', ['stop', 'skip'])
def test_train_step_metrics_are_float32_scalars(nan_policy):
  # The logger sums and averages them across steps and hosts as float32.
  _, (_, metrics) = _linear_step(optax.sgd(0.1), np.full((4, 3), 0.25), {}, nan_policy=nan_policy)
  assert set(metrics) >= {
      'loss_sum', 'top1_correct', 'top5_correct', 'count', 'grad_norm_sum', 'steps',
      'learning_rate', 'finite', 'skipped'
  }
  for name, value in metrics.items():
    assert value.shape == () and value.dtype == jnp.float32, (name, value.dtype)
  assert float(metrics['count']) == len(_LABELS) and float(metrics['steps']) == 1
