"""The recipes' optimizer against a few steps of timm's optimizer factory (tests/recipes/fixtures).

timm got only what RSB's command lines gave it (optimizer, rate, weight
decay) and kept its own defaults for the rest: Lamb's eps of 1e-6, its
built-in clipping of the global gradient norm to 1.0, betas (0.9, 0.999) and
no decay on 1-D parameters. Our optimizer is built from the recipe's config
alone, so a recipe value that is not what timm used fails here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import imagenet
from se_flax.train import optim
from tests.recipes import timm_fixtures


def recipe_config(case):
  """The recipe's config at its own batch, its rate held constant, as timm ran these steps."""
  config = imagenet.get_config(f'model=resnet50,recipe={case["recipe"]}')
  if case['opt']:
    config.optimizer.name = case['opt']
  # A constant rate: the schedule has its own fixture (test_timm_schedule.py).
  config.schedule.name = 'step'
  config.schedule.warmup_epochs = 0.0
  config.schedule.step_epochs = 1e6
  for field in ('warmup_lr', 'min_lr', 'cooldown_epochs'):
    config.schedule[field] = 0.0
  return config


def run_steps(config, params, grads):
  tx, _ = optim.create_optimizer(config, steps_per_epoch=10, total_steps=100)

  @jax.jit
  def steps(p, gs):
    state, after = tx.init(p), []
    for g in gs:
      updates, state = tx.update(g, state, p)
      p = jax.tree.map(jnp.add, p, updates)
      after.append(p)
    return after

  after = steps({
      k: jnp.asarray(v) for k, v in params.items()
  }, [{
      k: jnp.asarray(v) for k, v in g.items()
  } for g in grads])
  return [{k: np.asarray(v) for k, v in p.items()} for p in after]


def unflatten(row, layout):
  out, start = {}, 0
  for name, shape in layout:
    size = int(np.prod(shape))
    out[name] = row[start:start + size].reshape(shape)
    start += size
  return out


@pytest.mark.parametrize('name', timm_fixtures.optim_cases())
def test_the_recipe_optimizer_takes_timms_steps(name):
  case = timm_fixtures.meta(f'optim_{name}')
  rows = timm_fixtures.array(f'optim_{name}')
  layout, steps = case['params'], len(case['grad_norms'])
  params = unflatten(rows[0], layout)
  grads = [unflatten(r, layout) for r in rows[1:1 + steps]]
  expected = [unflatten(r, layout) for r in rows[1 + steps:]]
  got = run_steps(recipe_config(case), params, grads)
  for step, (ours, theirs) in enumerate(zip(got, expected), start=1):
    for key in theirs:
      # An update moves a parameter by about lr = 5e-3 to 8e-3; float32 rounding stays near 1e-7.
      np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=2e-6,
                                 err_msg=f'{name}: {key} after step {step}')


def test_the_lamb_recipes_set_what_timms_lamb_left_at_its_defaults():
  # The same facts as the steps above, as messages: each names the setting.
  case = timm_fixtures.meta('optim_lamb_large_gradients')
  decayed, plain = sorted(case['param_groups'], key=lambda g: -g['weight_decay'])
  config = imagenet.get_config(f'recipe={case["recipe"]}')
  opt = config.optimizer
  assert case['optimizer'] == 'Lamb' and opt.name == 'lamb'
  assert opt.eps == decayed['eps'], 'timm\'s Lamb eps'
  assert (opt.b1, opt.b2) == tuple(decayed['betas'])
  # timm's Lamb scales the whole gradient to a global norm of at most max_grad_norm before its
  # moments: what optimizer.grad_clip_norm does to the raw gradients.
  assert opt.grad_clip_norm == decayed['max_grad_norm'] == 1.0
  assert opt.weight_decay == decayed['weight_decay'] and plain['weight_decay'] == 0.0
  # No decay (and so no trust ratio, in timm's Lamb) for the BN parameters and the bias.
  assert sorted(plain['params']) == ['bn.bias', 'bn.weight', 'fc.bias']
  assert not opt.decay_bn_and_bias
