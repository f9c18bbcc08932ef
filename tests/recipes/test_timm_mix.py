"""Mixup, CutMix and BCE against timm's Mixup (batch mode) and BinaryCrossEntropy.

For each fixture case timm drew a weight (and, for CutMix, a box centre and a
box) from a seeded numpy; we take the same draw, mix the same images and
smoothed one-hot targets, and compare images, targets and the BCE loss with
the recipe's threshold. One case mixes two processes' local batches, each
with its own draw, as timm's training does on every process.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import imagenet
from se_flax.train import mix
from se_flax.train import step
from tests.recipes import timm_fixtures

FIXTURE = timm_fixtures.meta('mix')
CASES = FIXTURE['cases']
K = FIXTURE['num_classes']
_, C, H, W = FIXTURE['shape_nchw']


def recipe():
  return imagenet.get_config(f'model=resnet50,recipe={FIXTURE["recipe"]}')


def to_draw(d):
  """A mix.Draw of timm's draw: the weight it drew and, for CutMix, timm's own box."""
  box = d.get('box', [0, 0, 0, 0])
  return mix.Draw(mixed=jnp.asarray(True), cutmix=jnp.asarray(d['cutmix']),
                  lam=jnp.float32(d['lam']), box=jnp.asarray(box, jnp.int32))


def inputs(name):
  images, mixed = timm_fixtures.array(f'mix_{name}')
  case = CASES[name]
  config = recipe()
  targets = step.one_hot_targets(jnp.asarray(case['labels']), K, config.label_smoothing)
  nhwc = lambda x: jnp.asarray(x.transpose(0, 2, 3, 1))
  return case, config, nhwc(images), targets, mixed.transpose(0, 2, 3, 1)


# One compiled program each (eager, every small op compiles on its own: seconds).
apply = jax.jit(mix.apply)
apply_groups = jax.jit(lambda d, x, t: mix.apply_groups(d, x, t))
bce = jax.jit(step.per_example_loss, static_argnums=(2, 3))
cutmix_box = jax.jit(lambda lam, cy, cx: mix.cutmix_box(lam, cy, cx, H, W))


def check_mixed(name, got_images, got_targets, case, config, mixed):
  np.testing.assert_allclose(got_images, mixed, rtol=1e-6, atol=1e-6, err_msg=f'{name} images')
  np.testing.assert_allclose(got_targets, np.asarray(case['targets']), rtol=1e-6, atol=1e-7,
                             err_msg=f'{name} targets')
  loss = bce(jnp.asarray(case['logits'], jnp.float32), got_targets, config.loss,
             config.bce_target_threshold).mean()
  np.testing.assert_allclose(float(loss), case['bce_loss'], rtol=1e-6, err_msg=f'{name} bce')


@pytest.mark.parametrize('name', [n for n in CASES if CASES[n]['processes'] == 1])
def test_one_batch_mixes_as_timm(name):
  case, config, images, targets, mixed = inputs(name)
  got_images, got_targets = apply(to_draw(case['draws'][0]), images, targets)
  check_mixed(name, got_images, got_targets, case, config, mixed)


def test_each_process_batch_mixes_on_its_own_as_timm():
  case, config, images, targets, mixed = inputs('per_process')
  draws = [to_draw(d) for d in case['draws']]
  stacked = mix.Draw(*(jnp.stack(parts) for parts in zip(*draws)))
  got_images, got_targets = apply_groups(stacked, images, targets)
  check_mixed('per_process', got_images, got_targets, case, config, mixed)


@pytest.mark.parametrize('name', [n for n in CASES if 'cutmix' in n])
def test_the_cutmix_box_is_rsbs(name):
  d = CASES[name]['draws'][0]
  cy, cx = d['centre']
  cut_h, cut_w = int(H * np.sqrt(1 - d['lam'])), int(W * np.sqrt(1 - d['lam']))
  ours = np.asarray(cutmix_box(jnp.float32(d['lam']), cy, cx)).tolist()
  # The timm of RSB's time spans cy - cut // 2 .. cy + cut // 2 (clipped), one short for odd cuts.
  rsb = [
      max(cy - cut_h // 2, 0),
      min(cy + cut_h // 2, H),
      max(cx - cut_w // 2, 0),
      min(cx + cut_w // 2, W)
  ]
  assert ours == rsb
  # timm 1.0 ends at cy + (cut + 1) // 2: odd cuts get the missing row or column.
  assert d['box'] == [rsb[0], min(cy + (cut_h + 1) // 2, H), rsb[2], min(cx + (cut_w + 1) // 2, W)]
