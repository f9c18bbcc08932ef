"""The paper's rule on se_flax's plain ResNet-50 builds SE-ResNet-50: its parameters and outputs.

Surgery names each block after the module it follows (`layer1_0/bn3/se`),
the preset after its unit (`layer1_0/se`); with that one renaming the two
trees are the same, and the same weights give the same logits.
"""

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from se_flax import models
from se_flax import surgery
from se_flax.layers.se import SESpec
from tests.layers.random_variables import random_variables
from tests.surgery import checks

X = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)


def to_surgery_names(variables):
  flat = traverse_util.flatten_dict(variables)
  return traverse_util.unflatten_dict({
      k[:2] + ('bn3',) + k[2:] if len(k) > 2 and k[2] == 'se' else k: v for k, v in flat.items()
  })


def test_the_residual_rule_on_resnet50_gives_se_resnet50():
  plain = models.create_model('resnet50', 10)
  se_resnet50 = models.create_model('se_resnet50', 10)
  model = surgery.add_se(plain, SESpec(), 'residual', args=(X,), kwargs={'train': False})
  # One block per bottleneck unit, after its last BN: 3 + 4 + 6 + 3.
  assert len(model.sites) == 16 and all(site[1] == 'bn3' for site in model.sites)
  ours = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), X)
  preset = random_variables(se_resnet50, X, train=False)
  assert checks.count(ours['params']) == checks.count(preset['params']) == 26_059_514
  assert (jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, to_surgery_names(preset)))

  x = jnp.asarray(np.random.default_rng(0).normal(size=X.shape), jnp.float32)
  expected = se_resnet50.apply(preset, x, train=False)
  np.testing.assert_allclose(np.asarray(model.apply(to_surgery_names(preset), x, train=False)),
                             np.asarray(expected), rtol=1e-5, atol=1e-5)
