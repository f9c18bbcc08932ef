"""train_step / eval_step against numpy, across meshes, and under the NaN policies."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.data import datasets
from se_flax.errors import ConfigError
from se_flax.train import parallel, step as step_lib
from tests.train.tiny import IMAGE_SHAPE, NUM_CLASSES, TinyNet, make_batch, make_config, tiny_setup


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
  assert step_lib.cross_entropy(jnp.asarray(logits, jnp.bfloat16), labels, k, eps).dtype == jnp.float32


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
  batch = make_batch(seed=3)
  variables = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  apply = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))
  logits, _ = apply(variables, batch['image'])
  logits = np.asarray(logits, np.float64)
  targets = np.full(logits.shape, 0.1 / NUM_CLASSES)
  targets[np.arange(16), batch['label']] += 0.9
  order = np.argsort(-logits, axis=-1)
  new_state, metrics = train(state, parallel.global_batch(batch, mesh8))
  metrics = jax.device_get(metrics)
  np.testing.assert_allclose(metrics['loss_sum'], -(targets * np_log_softmax(logits)).sum(), rtol=1e-5)
  assert metrics['top1_correct'] == (order[:, 0] == batch['label']).sum()
  assert metrics['top5_correct'] == (order[:, :5] == batch['label'][:, None]).any(-1).sum()
  np.testing.assert_allclose(metrics['learning_rate'], float(schedule(0)))
  assert metrics['grad_norm_sum'] > 0 and metrics['steps'] == 1 and metrics['skipped'] == 0
  assert int(new_state.step) == 1


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
  jax.tree.map(np.testing.assert_array_equal,
               (after.params, after.batch_stats, after.opt_state),
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
  jax.tree.map(np.testing.assert_array_equal,
               (after.params, after.batch_stats, after.opt_state),
               (before.params, before.batch_stats, before.opt_state))
  state, metrics = train(state, parallel.global_batch(make_batch(seed=8), mesh8))
  assert float(metrics['finite']) == 1 and int(state.step) == 3
  # Only one update was applied before this one, so the schedule is at 1, not 2.
  assert float(metrics['learning_rate']) == float(setup.schedule(1))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))


def test_unknown_nan_policy_is_named(mesh8):
  with pytest.raises(ValueError, match=r'config\.nan_policy'):
    step_lib.make_train_step(TinyNet(), make_config(nan_policy='ignore'), mesh8,
                             lambda s: 0.1, NUM_CLASSES)


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
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               s_u8.params, s_f32.params)
