"""SE surgery on an NNX network written as a third party would, in the style of NNX's own examples.

Units in an `nnx.List`, a projection conv with bias on the shortcut,
`nnx.BatchNorm` switched by `model.train()` / `model.eval()`, an
`nnx.Sequential` stem. Checked as the Linen network is (test_linen.py):
where the blocks go and what they cost, identity start against the plain
network, a train step with `nnx.jit` and a checkpoint round trip.
"""

from flax import nnx
import jax
import numpy as np
import optax
import pytest

from se_flax import surgery
from se_flax.layers.se import SEBlockNNX
from se_flax.layers.se import SESpec
from tests.surgery import checks


class Unit(nnx.Module):

  def __init__(self, cin, cout, stride, *, rngs):
    self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(cout, rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(cout, rngs=rngs)
    self.proj = (nnx.Conv(cin, cout,
                          (1,
                           1), strides=stride, rngs=rngs) if stride != 1 or cin != cout else None)

  def __call__(self, x):
    y = self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x)))))
    return nnx.relu(y + (x if self.proj is None else self.proj(x)))


class Net(nnx.Module):

  def __init__(self, *, rngs, classes=10):
    self.stem = nnx.Sequential(nnx.Conv(3, 8, (3, 3), use_bias=False, rngs=rngs),
                               nnx.BatchNorm(8, rngs=rngs), nnx.relu)
    self.units = nnx.List(
        [Unit(8, 8, 1, rngs=rngs),
         Unit(8, 16, 2, rngs=rngs),
         Unit(16, 16, 1, rngs=rngs)])
    self.head = nnx.Linear(16, classes, rngs=rngs)

  def __call__(self, x):
    x = self.stem(x)
    for unit in self.units:
      x = unit(x)
    return self.head(x.mean(axis=(1, 2)))


SPEC = SESpec(reduction=4)
X = checks.images()


def plain():
  net = Net(rngs=nnx.Rngs(0))
  net.eval()
  return net


def params(model):
  return nnx.state(model, nnx.Param).to_pure_dict()


def names(sites):
  return [site.name for site in sites]


def test_residual_rule_takes_the_branch_norm_before_each_sum():
  net = plain()
  sites = surgery.find_sites(net, 'residual', args=(X,))
  assert names(sites) == ['units/0/bn2', 'units/1/bn2', 'units/2/bn2']
  net.train()
  assert surgery.find_sites(net, 'residual', args=(X,)) == sites


def test_convs_rule_and_a_predicate():
  net = plain()
  assert names(surgery.find_sites(net, 'convs', min_channels=16, args=(X,))) == [
      'units/1/conv1', 'units/1/conv2', 'units/1/proj', 'units/2/conv1', 'units/2/conv2'
  ]
  assert names(surgery.find_sites(net, lambda path, shape: path == 'stem/layers/0',
                                  args=(X,))) == ['stem/layers/0']


@pytest.mark.parametrize('where,min_channels,blocks', [('residual', 128, [8, 16, 16]),
                                                       ('convs', 16, [16] * 5)])
def test_surgery_adds_only_the_blocks_parameters(where, min_channels, blocks):
  net = plain()
  model = surgery.add_se(net, SPEC, where, min_channels=min_channels, args=(X,), rngs=nnx.Rngs(1))
  assert checks.count(params(model)) - checks.count(params(net)) == sum(
      checks.se_block_params(SPEC, c) for c in blocks)
  assert sum(isinstance(m, SEBlockNNX) for _, m in nnx.iter_modules(model)) == len(blocks)
  # The plain network is not changed, and its weights sit at the same paths in the new one.
  assert not any(isinstance(m, SEBlockNNX) for _, m in nnx.iter_modules(net))
  ours = nnx.state(model).flat_state()
  for path, value in nnx.state(net).flat_state():
    np.testing.assert_array_equal(np.asarray(value[...]), np.asarray(dict(ours)[path][...]))


def test_identity_start_keeps_the_plain_networks_function():
  net = plain()
  model = surgery.add_se(net, SPEC, 'convs', min_channels=8, identity_start=True, args=(X,),
                         rngs=nnx.Rngs(1))
  np.testing.assert_array_equal(np.asarray(model(X)), np.asarray(net(X)))
  default = surgery.add_se(net, SPEC, 'convs', min_channels=8, args=(X,), rngs=nnx.Rngs(1))
  assert np.abs(np.asarray(default(X)) - np.asarray(net(X))).max() > 1e-3


def test_a_train_step_and_a_checkpoint_round_trip(tmp_path):
  model = surgery.add_se(plain(), SPEC, 'residual', identity_start=True, args=(X,),
                         rngs=nnx.Rngs(1))
  model.train()
  optimizer = nnx.Optimizer(model, optax.sgd(0.1, momentum=0.9), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x, y):

    def loss_fn(model):
      return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  before = jax.tree.map(np.asarray, params(model))
  assert np.isfinite(step(model, optimizer, X, checks.labels()))
  after = params(model)
  for unit in range(3):
    moved = after['units'][unit]['bn2']['se']['fc2']['kernel']
    assert np.abs(np.asarray(moved) - before['units'][unit]['bn2']['se']['fc2']['kernel']).max() > 0
  model.eval()
  expected = np.asarray(model(X))
  restored = checks.round_trip(tmp_path, nnx.state(model).to_pure_dict())
  fresh = surgery.add_se(plain(), SPEC, 'residual', identity_start=True, args=(X,),
                         rngs=nnx.Rngs(2))
  nnx.update(fresh, nnx.State(restored))
  fresh.eval()
  np.testing.assert_array_equal(np.asarray(fresh(X)), expected)


def test_the_gates_are_captured_per_block():
  model = surgery.add_se(plain(), SPEC, 'residual', args=(X,), rngs=nnx.Rngs(1))
  _, intermediates = nnx.capture(model, nnx.Intermediate)(X)
  flat = {'/'.join(map(str, path)): v for path, v in intermediates.flat_state()}
  assert sorted(flat) == ['units/0/bn2/se/gate', 'units/1/bn2/se/gate', 'units/2/bn2/se/gate']
  assert flat['units/1/bn2/se/gate'].get_value()[0].shape == (4, 1, 1, 16)


def test_nnx_surgery_needs_a_sample_call():
  with pytest.raises(ValueError, match='needs args'):
    surgery.add_se(plain(), SPEC, 'residual')
