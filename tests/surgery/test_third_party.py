"""SE surgery on a real third-party Flax model: jax-resnet's ResNets (requirements-test.txt).

jax-resnet (n2cholas) builds its ResNets as a `Sequential` of modules handed
in as a list field, wraps conv + BN (+ activation) in `ConvBlock`, starts the
last BN of each branch at zero, and reads training mode from whether
`batch_stats` is mutable. Of the other Flax model packages on PyPI, flaxmodels
0.1.3 imports and builds with our pins only with four more packages for its
GPT-2 and StyleGAN parts, and flaim 0.0.5 fails to import (jax.random.KeyArray
is gone from jax).
"""

import jax
import jax_resnet
import numpy as np
import optax

from se_flax import surgery
from se_flax.layers.se import SESpec
from tests.surgery import checks

X = checks.images(n=2, size=16)


def test_resnet18_gets_the_se_resnet18_blocks():
  net = jax_resnet.ResNet18(n_classes=10)
  sites = surgery.find_sites(net, 'residual', args=(X,))
  # layers_2..layers_9 are the eight basic units; each ends in ConvBlock_1's BN, before the add.
  assert [s.name for s in sites] == [f'layers_{i}/ConvBlock_1/BatchNorm_0' for i in range(2, 10)]
  assert [s.channels for s in sites] == [64, 64, 128, 128, 256, 256, 512, 512]
  model = surgery.add_se(net, SESpec(), 'residual')
  count = lambda m: checks.count(jax.eval_shape(m.init, jax.random.PRNGKey(0), X)['params'])
  added = sum(checks.se_block_params(SESpec(), s.channels) for s in sites)
  # By hand: 2 x (580 + 2,184 + 8,464 + 33,312), what se_resnet18 adds to resnet18 (docs/models.md).
  assert count(model) - count(net) == added == 89_080
  convs = surgery.find_sites(net, 'convs', min_channels=256, args=(X,))
  assert len(convs) == 10 and sum('ResNetSkipConnection' in s.name for s in convs) == 2


def small_resnet_d():
  """A two-stage ResNet-D of the package's own bottleneck units (avg-pool projection shortcut)."""
  return jax_resnet.ResNet(jax_resnet.ResNetDBottleneckBlock, stage_sizes=[1, 1],
                           hidden_sizes=(4, 8), n_classes=10, stem_cls=jax_resnet.ResNetDStem)


def test_identity_start_train_step_and_checkpoint(tmp_path):
  net = small_resnet_d()
  plain = jax.jit(net.init)(jax.random.PRNGKey(0), X)
  model = surgery.add_se(net, SESpec(reduction=4), 'residual', identity_start=True, args=(X,))
  assert [s for s in model.sites] == [('layers_2', 'ConvBlock_2', 'BatchNorm_0'),
                                      ('layers_3', 'ConvBlock_2', 'BatchNorm_0')]
  # The package zero-initialises each branch's last BN scale; as if trained, it is not zero.
  plain = jax.tree_util.tree_map_with_path(
      lambda path, v: v + 0.5 if path[-1].key == 'scale' else v, plain)
  variables = surgery.with_plain_weights(jax.jit(model.init)(jax.random.PRNGKey(1), X), plain)
  np.testing.assert_array_equal(np.asarray(model.apply(variables, X)),
                                np.asarray(net.apply(plain, X)))

  tx = optax.sgd(0.1)

  @jax.jit
  def step(variables):

    def loss_fn(params):
      logits, new = model.apply({**variables, 'params': params}, X, mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, checks.labels(2)).mean(), new

    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
    updates, _ = tx.update(grads, tx.init(variables['params']))
    return {**new, 'params': optax.apply_updates(variables['params'], updates)}, loss

  trained, loss = step(variables)
  assert np.isfinite(loss)
  fc2 = lambda v: np.asarray(v['params']['layers_3']['ConvBlock_2']['BatchNorm_0']['se']['fc2'][
      'kernel'])
  assert np.abs(fc2(trained) - fc2(variables)).max() > 0
  restored = checks.round_trip(tmp_path, trained)
  np.testing.assert_array_equal(np.asarray(model.apply(restored, X)),
                                np.asarray(model.apply(trained, X)))
