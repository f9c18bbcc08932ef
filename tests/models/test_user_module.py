"""SE on any Flax module, the paper's way (section 3.3): wrap the transformation, scale its output.

    import flax.linen as nn
    from se_flax.layers.se import SEBlock, SESpec

    class SEConv(nn.Module):
      features: int
      se: SESpec = SESpec()        # any ablation: SESpec(reduction=8, gate='hard_sigmoid', ...)

      @nn.compact
      def __call__(self, x):
        u = nn.relu(nn.Conv(self.features, (3, 3))(x))   # the transformation F_tr
        return SEBlock(self.se)(u)                        # U rescaled by its excitation

A residual unit puts the block on its branch before the sum: `x + SEBlock(se)(branch(x))`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from se_flax.analysis import gates as gates_lib
from se_flax.layers.se import SEBlock
from se_flax.layers.se import SESpec


class SEConv(nn.Module):
  features: int
  se: SESpec = SESpec()

  @nn.compact
  def __call__(self, x):
    u = nn.relu(nn.Conv(self.features, (3, 3))(x))
    return SEBlock(self.se)(u)


class Net(nn.Module):
  """Two SE convolutions and a classifier: a user's network, nothing from se_flax.models."""
  se: SESpec = SESpec()

  @nn.compact
  def __call__(self, x):
    x = SEConv(16, self.se, name='layer1_0')(x)
    x = SEConv(32, self.se, name='layer2_0')(nn.max_pool(x, (2, 2), strides=(2, 2)))
    return nn.Dense(10)(x.mean(axis=(1, 2)))


def data(n=8):
  rng = np.random.default_rng(0)
  return rng.uniform(size=(n, 8, 8, 1)).astype(np.float32), np.arange(n) % 10


def test_se_wraps_a_user_module_and_trains_one_step():
  x, y = data()
  net = Net(SESpec(reduction=8))
  params = jax.jit(net.init)(jax.random.PRNGKey(0), x)['params']
  # The SE block's excitation: C -> C / r -> C, with biases.
  assert jax.tree.map(jnp.shape, params['layer2_0']['SEBlock_0']) == {
      'fc1': {
          'kernel': (32, 4),
          'bias': (4,)
      },
      'fc2': {
          'kernel': (4, 32),
          'bias': (32,)
      }
  }

  tx = optax.sgd(0.1)
  loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(net.apply({'params': p}, x), y
                                                                     ).mean()
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  assert np.isfinite(loss) and jax.jit(loss_fn)(new) < loss
  fc2 = new['layer1_0']['SEBlock_0']['fc2']['bias'] - params['layer1_0']['SEBlock_0']['fc2']['bias']
  assert np.abs(np.asarray(fc2)).max() > 0


def test_the_gates_of_a_user_module_reach_the_analysis():
  x, _ = data()
  net = Net(SESpec(reduction=8, gate='hard_sigmoid'))
  variables = jax.jit(net.init)(jax.random.PRNGKey(0), x)
  _, state = jax.jit(lambda v: net.apply(v, x, mutable=['intermediates']))(variables)
  gates = gates_lib.flatten_gates(state['intermediates'])
  assert [(k, g.shape) for k, g in gates.items()] == [('layer1_0', (8, 16)), ('layer2_0', (8, 32))]
  values = np.concatenate([np.asarray(g).ravel() for g in gates.values()])
  assert values.min() >= 0 and values.max() <= 1
