"""MACs and the summary table against the paper's GFLOPs and timm's counts (reference README)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from se_flax.layers.se import SESpec
from se_flax.models import registry
from se_flax.models import summary

IMAGE = (224, 224, 3)


@functools.lru_cache(maxsize=None)
def gmacs(name, se=None, **overrides):
  return summary.macs_of(registry.create_model(name, 1000, se=se, **overrides), IMAGE) / 1e9


# (model, overrides, published GMACs, relative tolerance). The paper's Table 2 GFLOPs are
# multiply-adds of the Caffe layout (stride on the first 1x1 conv); timm's counts use the
# "v1.5" layout (stride on the 3x3 conv) except legacy_seresnet50.
PUBLISHED = [
    ('resnet50', {}, 3.86, 0.01),  # paper Table 2
    ('se_resnet50', {}, 3.87, 0.01),  # paper Table 2
    ('se_resnet50', {}, 3.860, 0.005),  # timm legacy_seresnet50
    ('resnet50', {
        'stride_in_1x1': False
    }, 4.089, 0.005),  # timm resnet50
    ('se_resnet50', {
        'stride_in_1x1': False
    }, 4.092, 0.005),  # timm seresnet50
    ('resnet18', {}, 1.814, 0.005),  # timm resnet18
    ('se_resnext50_32x4d', {}, 4.233, 0.005),  # timm seresnext50_32x4d
    ('senet154', {}, 20.688, 0.005),  # timm legacy_senet154
]


@pytest.mark.parametrize('name,overrides,published,rtol', PUBLISHED,
                         ids=[f'{n}-{p}' for n, _, p, _ in PUBLISHED])
def test_macs_match_published_figures(name, overrides, published, rtol):
  assert gmacs(name, **overrides) == pytest.approx(published, rel=rtol)


def test_table16_no_squeeze_costs_4_27_gflops():
  # NoSqueeze runs the excitation's 1x1 convs at every position (paper Table 16: 4.27 GFLOPs).
  assert gmacs('se_resnet50', se=SESpec(squeeze='none')) == pytest.approx(4.27, rel=0.005)


def test_se_overhead_is_the_excitations_matrix_products():
  # Squeeze and scale are not multiply-accumulates; the excitation costs 2 C^2 / r per unit.
  overhead = sum(n * 2 * c * (c // 16) for n, c in [(3, 256), (4, 512), (6, 1024), (3, 2048)])
  assert round((gmacs('se_resnet50') - gmacs('resnet50')) * 1e9) == overhead


class TwoLayers(nn.Module):
  """A conv and a dense layer whose MACs are easy to count by hand."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = nn.Conv(8, (3, 3), padding='SAME', feature_group_count=2)(x)  # 6 -> 8 channels, 2 groups
    return nn.Dense(5)(x.reshape((x.shape[0], -1)))


def test_count_macs_of_grouped_conv_and_dense():
  conv = 10 * 10 * 8 * (6 // 2) * 3 * 3
  dense = 10 * 10 * 8 * 5
  assert summary.macs_of(TwoLayers(), (10, 10, 6)) == conv + dense


def test_count_macs_sees_inside_nested_jit():
  f = jax.jit(lambda a, b: a @ b)
  args = (jax.ShapeDtypeStruct((3, 4), jnp.float32), jax.ShapeDtypeStruct((4, 7), jnp.float32))
  assert summary.count_macs(lambda a, b: f(a, b) + f(a, b), *args) == 2 * 3 * 7 * 4


def test_summarize_table_has_stages_and_totals():
  model = registry.create_model('se_resnet50', 1000)
  result = summary.summarize(model, IMAGE, name='se_resnet50')
  assert result.params == 28_088_024
  assert result.macs / 1e9 == pytest.approx(3.87, rel=0.01)
  assert [s[0] for s in result.stages] == ['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'head']
  assert sum(s[1] for s in result.stages) == result.params
  assert [s[2] for s in result.stages[1:5]] == [(56, 56, 256), (28, 28, 512), (14, 14, 1024),
                                                (7, 7, 2048)]
  # Stem: 7x7x3x64 conv and its BN; head: the 2048 -> 1000 classifier.
  assert result.stages[0][1] == 7 * 7 * 3 * 64 + 2 * 64
  assert result.stages[-1][1] == 2048 * 1000 + 1000
  table = result.table()
  assert 'se_resnet50' in table
  assert '28,088,024' in table
  assert f'{result.macs / 1e9:.3f}' in table and '3.86' in table
  for stage in ('stem', 'layer1', 'layer4', 'head', 'total'):
    assert stage in table


def test_summarize_cifar_network():
  result = summary.summarize(registry.create_model('cifar_resnet20', 10), (32, 32, 3))
  stages = {name: (params, shape) for name, params, shape in result.stages}
  assert list(stages) == ['stem', 'layer1', 'layer2', 'layer3', 'head']
  assert stages['stem'][0] == 3 * 3 * 3 * 16 + 2 * 16
  assert stages['head'][0] == 64 * 10 + 10
  assert [stages[f'layer{i}'][1] for i in (1, 2, 3)] == [(32, 32, 16), (16, 16, 32), (8, 8, 64)]
  # Every 3x3 conv, counted by hand: output pixels x output channels x 9 x input channels.
  convs = (32 * 32 * 16 * 9 * (3 + 6 * 16) + 16 * 16 * 32 * 9 * (16 + 5 * 32) + 8 * 8 * 64 * 9 *
           (32 + 5 * 64))
  assert result.macs == convs + 64 * 10
