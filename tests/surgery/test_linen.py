"""SE surgery on a Linen network written as a third party would: no `se` field, its own layout.

The network builds its submodules in `setup`, keeps its stages in a list,
wraps conv + BN + ReLU in a module of its own, scales its residual branch by a
learned layer scale, and takes `training` instead of `train`. Each rule is
checked for where its blocks go and what they cost (against a hand count);
then identity start against the plain network's outputs, a train step and a
checkpoint round trip.
"""

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from se_flax import surgery
from se_flax.analysis import gates as gates_lib
from se_flax.errors import ConfigError
from se_flax.layers.se import SESpec
from tests.surgery import checks


class ConvNormAct(nn.Module):
  features: int
  kernel: int = 3
  stride: int = 1
  act: bool = True

  def setup(self):
    self.conv = nn.Conv(self.features, (self.kernel, self.kernel), strides=self.stride,
                        padding='SAME', use_bias=False)
    self.norm = nn.BatchNorm(momentum=0.9)

  def __call__(self, x, training):
    x = self.norm(self.conv(x), use_running_average=not training)
    return nn.relu(x) if self.act else x


class Residual(nn.Module):
  features: int
  stride: int = 1
  project: bool = False

  def setup(self):
    self.conv_a = ConvNormAct(self.features, stride=self.stride)
    self.conv_b = ConvNormAct(self.features, act=False)
    self.layer_scale = self.param('layer_scale', nn.initializers.ones, (self.features,))
    if self.project:
      self.shortcut = ConvNormAct(self.features, 1, self.stride, act=False)

  def __call__(self, x, training):
    y = self.conv_b(self.conv_a(x, training), training) * self.layer_scale
    s = self.shortcut(x, training) if self.project else x
    return nn.relu(s + y)


class TinyNet(nn.Module):
  num_classes: int = 10

  def setup(self):
    self.stem = ConvNormAct(8)
    self.stages = [Residual(8), Residual(16, 2, project=True), Residual(16)]
    self.head = nn.Dense(self.num_classes)

  def __call__(self, x, training=False):
    x = self.stem(x, training)
    for stage in self.stages:
      x = stage(x, training)
    return self.head(jnp.mean(x, axis=(1, 2)))


SPEC = SESpec(reduction=4)
X = checks.images()
CALL = dict(args=(X,), kwargs={'training': False})


@pytest.fixture(scope='module')
def plain_variables():
  return jax.jit(TinyNet().init)(jax.random.PRNGKey(0), X)


def names(sites):
  return [site.name for site in sites]


def test_residual_rule_takes_the_branch_norm_before_each_sum():
  sites = surgery.find_sites(TinyNet(), 'residual', **CALL)
  # Not the stem, not the first norm of a branch, not the projection shortcut's norm.
  assert names(sites) == ['stages_0/conv_b/norm', 'stages_1/conv_b/norm', 'stages_2/conv_b/norm']
  assert [s.channels for s in sites] == [8, 16, 16]
  # Training mode traces other operations (batch statistics) and finds the same places.
  assert surgery.find_sites(TinyNet(), 'residual', args=(X,), kwargs={'training': True}) == sites


def test_convs_rule_takes_every_conv_with_enough_outputs():
  sites = surgery.find_sites(TinyNet(), 'convs', min_channels=16, **CALL)
  assert names(sites) == [
      'stages_1/conv_a/conv', 'stages_1/conv_b/conv', 'stages_1/shortcut/conv',
      'stages_2/conv_a/conv', 'stages_2/conv_b/conv'
  ]
  assert len(surgery.find_sites(TinyNet(), 'convs', min_channels=1, **CALL)) == 8


def test_a_predicate_sees_each_module_path_and_output_shape():
  seen = []

  def where(path, shape):
    seen.append((path, shape))
    return path.endswith('conv_a') and shape[1] == 4

  sites = surgery.find_sites(TinyNet(), where, **CALL)
  assert names(sites) == ['stages_1/conv_a', 'stages_2/conv_a']
  assert ('stem', (4, 8, 8, 8)) in seen and ('stages_1/shortcut/norm', (4, 4, 4, 16)) in seen


@pytest.mark.parametrize('where,min_channels,blocks', [('residual', 128, [8, 16, 16]),
                                                       ('convs', 16, [16] * 5)])
def test_surgery_adds_only_the_blocks_parameters(plain_variables, where, min_channels, blocks):
  model = surgery.add_se(TinyNet(), SPEC, where, min_channels=min_channels, **CALL)
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), X)
  added = surgery.se_parameter_paths(variables)
  # Every plain variable keeps its path and shape; the rest are the blocks', counted by hand.
  assert (checks.count(variables['params']) - checks.count(plain_variables['params']) == sum(
      checks.se_block_params(SPEC, c) for c in blocks))
  assert len({p.split('/se/')[0] for p in added}) == len(blocks)
  assert jax.tree.map(jnp.shape,
                      variables['batch_stats']) == jax.tree.map(jnp.shape,
                                                                plain_variables['batch_stats'])
  surgery.with_plain_weights(variables, plain_variables)


def test_places_found_lazily_equal_places_found_up_front():
  lazy = surgery.add_se(TinyNet(), SPEC, 'residual')
  eager = surgery.add_se(TinyNet(), SPEC, 'residual', **CALL)
  assert eager.sites == (('stages_0', 'conv_b', 'norm'), ('stages_1', 'conv_b', 'norm'),
                         ('stages_2', 'conv_b', 'norm'))
  shapes = lambda m: jax.tree.map(jnp.shape, jax.eval_shape(m.init, jax.random.PRNGKey(0), X))
  assert shapes(lazy) == shapes(eager)


def test_identity_start_keeps_the_plain_networks_function(plain_variables):
  model = surgery.add_se(TinyNet(), SPEC, 'convs', min_channels=8, identity_start=True, **CALL)
  fresh = jax.jit(model.init)(jax.random.PRNGKey(1), X)
  variables = surgery.with_plain_weights(fresh, plain_variables)
  plain = TinyNet().apply(plain_variables, X)
  np.testing.assert_array_equal(np.asarray(model.apply(variables, X)), np.asarray(plain))
  # Default initialisation changes it: the identity is the option's doing.
  default = surgery.add_se(TinyNet(), SPEC, 'convs', min_channels=8, **CALL)
  variables = surgery.with_plain_weights(
      jax.jit(default.init)(jax.random.PRNGKey(1), X), plain_variables)
  assert np.abs(np.asarray(default.apply(variables, X)) - np.asarray(plain)).max() > 1e-3


def test_a_train_step_and_a_checkpoint_round_trip(plain_variables, tmp_path):
  model = surgery.add_se(TinyNet(), SPEC, 'residual', identity_start=True, **CALL)
  variables = surgery.with_plain_weights(
      jax.jit(model.init)(jax.random.PRNGKey(1), X), plain_variables)
  tx = optax.sgd(0.1, momentum=0.9)

  def loss_fn(params, stats):
    logits, new = model.apply({
        'params': params,
        'batch_stats': stats
    }, X, training=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, checks.labels()).mean(), new

  @jax.jit
  def step(params, stats, opt_state):
    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new['batch_stats'], opt_state, loss

  params, stats = variables['params'], variables['batch_stats']
  opt_state = tx.init(params)
  new_params, new_stats, opt_state, loss = step(params, stats, opt_state)
  assert np.isfinite(loss)
  # The blocks start as the identity and learn from the first step: their last layers move.
  before = traverse_util.flatten_dict(params, sep='/')
  after = traverse_util.flatten_dict(new_params, sep='/')
  last = [k for k in before if k.endswith('se/fc2/kernel')]
  assert len(last) == 3
  assert all(np.abs(np.asarray(after[k]) - np.asarray(before[k])).max() > 0 for k in last)
  trained = {'params': new_params, 'batch_stats': new_stats}
  restored = checks.round_trip(tmp_path, trained)
  np.testing.assert_array_equal(np.asarray(model.apply(restored, X)),
                                np.asarray(model.apply(trained, X)))


def test_the_gates_are_sown_for_the_analysis(plain_variables):
  model = surgery.add_se(TinyNet(), SPEC, 'convs', min_channels=16, **CALL)
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), X)
  _, state = model.apply(variables, X, mutable=['intermediates'])
  gates = gates_lib.flatten_gates(state['intermediates'])
  assert sorted(gates) == sorted([
      'stages_1/conv_a/conv', 'stages_1/conv_b/conv', 'stages_1/shortcut/conv',
      'stages_2/conv_a/conv', 'stages_2/conv_b/conv'
  ])
  assert all(g.shape == (4, 16) for g in gates.values())
  # Without a mutable 'intermediates' nothing is stored: apply returns the logits alone.
  assert model.apply(variables, X).shape == (4, 10)


def test_rules_and_specs_surgery_cannot_take():
  with pytest.raises(ConfigError, match="model.surgery.where='everywhere'"):
    surgery.add_se(TinyNet(), SPEC, 'everywhere')
  with pytest.raises(ConfigError, match='min_channels=0'):
    surgery.add_se(TinyNet(), SPEC, 'convs', min_channels=0)
  with pytest.raises(ConfigError, match="integration='post' places the blocks"):
    surgery.add_se(TinyNet(), SESpec(integration='post'), 'residual')
  with pytest.raises(ConfigError, match="excite='identity' has none"):
    surgery.add_se(TinyNet(), SESpec(excite='identity'), 'residual', identity_start=True)
