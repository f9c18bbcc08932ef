"""Parameter counts of every preset against timm, the original papers and SENet's ablation tables.

Counts come from `jax.eval_shape` of `init`: exact, and nothing is compiled. ImageNet presets
have 1000 classes (as timm's counts), CIFAR ones 10.
"""

import pytest

from se_flax.layers.se import SESpec
from se_flax.models import registry
from se_flax.models import zoo
from tests.models.model_shapes import count


def se_params(channels, r=16, bias=True):
  """One SE block on `channels` channels with floor rounding: C -> C//r -> C."""
  reduced = channels // r
  return 2 * channels * reduced + (reduced + channels if bias else 0)


def se_total(units_and_channels, r=16):
  """SE parameters of a network whose units are listed as (number of units, channels gated)."""
  return sum(n * se_params(c, r) for n, c in units_and_channels)


# timm 1.0.31, 1000 classes (reference README). The paper's ResNets and timm's resnet* share one
# parameter count: the stride's position changes the cost, not the weights.
TIMM = {
    'resnet18': 11_689_512,
    'resnet34': 21_797_672,
    'resnet50': 25_557_032,
    'resnet101': 44_549_160,
    'resnet152': 60_192_808,
    'resnext50_32x4d': 25_028_904,
    'resnext101_32x4d': 44_177_704,
    # Default floor rounding (C // 16) is the Caffe models' width: timm's legacy_* ports.
    'se_resnet18': 11_778_592,  # legacy_seresnet18
    'se_resnet50': 28_088_024,  # legacy_seresnet50
    'se_resnet101': 49_326_872,  # legacy_seresnet101
    'se_resnet152': 66_821_848,  # legacy_seresnet152
    'se_resnext50_32x4d': 27_559_896,  # legacy_seresnext50_32x4d
    'se_resnext101_32x4d': 48_955_416,  # legacy_seresnext101_32x4d
    'senet154': 115_088_984,  # legacy_senet154
}

# timm's seresnet* / seresnext*: SE width rounded to a multiple of 8.
TIMM_MULTIPLE8 = {
    'se_resnet18': 11_779_624,
    'se_resnet34': 21_960_416,
    'se_resnet50': 28_088_024,
    'se_resnet101': 49_326_872,
    'se_resnet152': 66_821_848,
    'se_resnext50_32x4d': 27_559_896,
    'se_resnext101_32x4d': 48_955_416,
}


@pytest.mark.parametrize('name', sorted(TIMM))
def test_imagenet_presets_match_timm(name):
  assert count(name) == TIMM[name]


# The deeper nets' SE blocks all gate >= 256 channels, where both roundings give C // 16
# (checked below), so tracing them again would count the same network twice.
TRACED_MULTIPLE8 = ('se_resnet18', 'se_resnet34', 'se_resnet50', 'se_resnext50_32x4d')


@pytest.mark.parametrize('name', TRACED_MULTIPLE8)
def test_multiple8_rounding_matches_timms_seresnets(name):
  assert count(name, se=SESpec(rounding='multiple8')) == TIMM_MULTIPLE8[name]


@pytest.mark.parametrize('name', sorted(set(TIMM_MULTIPLE8) - set(TRACED_MULTIPLE8)))
def test_multiple8_equals_floor_for_wide_se_blocks(name):
  for channels in (256, 512, 1024, 2048):
    assert SESpec(rounding='multiple8').reduced_width(channels) == channels // 16
  assert count(name) == TIMM_MULTIPLE8[name]


def test_se_resnet34_floor_width():
  # No published legacy_seresnet34; its three 64-channel units get C//16 = 4 instead of 8.
  assert count('se_resnet34') == count('resnet34') + se_total([(3, 64), (4, 128), (6, 256),
                                                               (3, 512)])


def test_senet154_plain_is_senet154_without_its_se_blocks():
  # 3, 8, 36, 3 units emitting 256, 512, 1024, 2048 channels.
  assert count('senet154_plain') == TIMM['senet154'] - se_total([(3, 256), (8, 512), (36, 1024),
                                                                 (3, 2048)])


# CIFAR: published sizes at their stated precision (in millions of parameters).
CIFAR = {
    # He et al. 2016, Table 6 (option A shortcuts).
    'cifar_resnet20': (0.27, 2),
    'cifar_resnet32': (0.46, 2),
    'cifar_resnet44': (0.66, 2),
    'cifar_resnet56': (0.85, 2),
    'cifar_resnet110': (1.7, 1),
    # He et al. 2016b (identity mappings), CIFAR results.
    'preact_resnet164': (1.7, 1),
    # Zagoruyko & Komodakis 2016 (WRN-16-8).
    'wrn16_8': (11.0, 1),
}


@pytest.mark.parametrize('name', sorted(CIFAR))
def test_cifar_presets_match_their_papers(name):
  millions, digits = CIFAR[name]
  assert round(count(name) / 1e6, digits) == millions


def test_cifar_resnet20_exact():
  # 19 3x3 convs (16-32-64 wide), their BNs and a 64x10 classifier; option A adds nothing.
  convs = 3 * 3 * (3 * 16 + 16 * 16 * 6 + 16 * 32 + 32 * 32 * 5 + 32 * 64 + 64 * 64 * 5)
  bns = 2 * (16 + 16 * 6 + 32 * 6 + 64 * 6)
  assert count('cifar_resnet20') == convs + bns + 64 * 10 + 10


# Units per stage and the channels their standard SE block gates.
CIFAR_SE_LAYOUT = {
    'cifar_resnet20': [(3, 16), (3, 32), (3, 64)],
    'cifar_resnet32': [(5, 16), (5, 32), (5, 64)],
    'cifar_resnet44': [(7, 16), (7, 32), (7, 64)],
    'cifar_resnet56': [(9, 16), (9, 32), (9, 64)],
    'cifar_resnet110': [(18, 16), (18, 32), (18, 64)],
    'preact_resnet164': [(18, 64), (18, 128), (18, 256)],
    'wrn16_8': [(2, 128), (2, 256), (2, 512)],
}


@pytest.mark.parametrize('name', sorted(CIFAR_SE_LAYOUT))
def test_cifar_se_twins_add_one_block_per_unit(name):
  assert count(f'se_{name}') == count(name) + se_total(CIFAR_SE_LAYOUT[name])


def test_every_preset_is_covered():
  # The paper's other backbones are counted in test_backbones.py.
  covered = set(TIMM) | {'se_resnet34', 'senet154_plain'
                        } | set(CIFAR) | {f'se_{n}' for n in CIFAR_SE_LAYOUT} | set(zoo.PRESETS)
  assert covered == set(registry.list_models())


# SENet paper ablations on SE-ResNet-50 -----------------------------------------------------------


def paper_millions(params):
  """Millions rounded up to one decimal, as the paper's Tables 10, 13 and 15 print them.

  Every count in those tables is the exact count rounded up: SE_3x3's 25,718,228 is printed
  25.8M, r=4's 35,635,688 35.7M. Rounding to nearest would contradict four of the entries.
  """
  return -(-params // 100_000) / 10


RESNET50_UNITS = [(3, 256), (4, 512), (6, 1024), (3, 2048)]


@pytest.mark.parametrize('r,millions', [(2, 45.7), (4, 35.7), (8, 30.7), (16, 28.1), (32, 26.9)])
def test_table10_reduction_ratio(r, millions):
  params = count('se_resnet50', se=SESpec(reduction=r))
  assert paper_millions(params) == millions
  assert params == TIMM['resnet50'] + se_total(RESNET50_UNITS, r)


# The paper numbers ResNet-50's stages conv2_x..conv5_x; its "stage 2, 3, 4" are indices 0, 1, 2.
@pytest.mark.parametrize('stage,millions', [(0, 25.6), (1, 25.7), (2, 26.4)])
def test_table13_se_in_one_stage(stage, millions):
  params = count('se_resnet50', se=SESpec(stages=(stage,)))
  assert paper_millions(params) == millions
  assert params == TIMM['resnet50'] + se_total([RESNET50_UNITS[stage]])


def test_table13_se_everywhere_and_baseline():
  assert paper_millions(count('resnet50')) == 25.6
  assert paper_millions(count('se_resnet50', se=SESpec(stages=(0, 1, 2, 3)))) == 28.1


def test_table15_se_after_the_3x3_conv():
  params = count('se_resnet50', se=SESpec(position='3x3'))
  assert paper_millions(params) == 25.8
  assert paper_millions(count('se_resnet50')) == 28.1
  # The 3x3 convs run at 64, 128, 256, 512 channels.
  assert params == TIMM['resnet50'] + se_total([(3, 64), (4, 128), (6, 256), (3, 512)])


def test_table16_no_squeeze_has_the_same_parameters():
  assert count('se_resnet50', se=SESpec(squeeze='none')) == TIMM['se_resnet50']


@pytest.mark.parametrize('mode', ['post', 'identity'])
def test_table14_output_side_modes_have_the_standard_size(mode):
  assert count('se_resnet50', se=SESpec(integration=mode)) == TIMM['se_resnet50']


def test_table14_pre_gates_the_units_inputs():
  # Inputs: 64 then 256 in stage 1, 256 then 512 in stage 2, 512 then 1024, 1024 then 2048.
  inputs = [(1, 64), (2, 256), (1, 256), (3, 512), (1, 512), (5, 1024), (1, 1024), (2, 2048)]
  assert count('se_resnet50', se=SESpec(integration='pre')) == TIMM['resnet50'] + se_total(inputs)


def test_fc_biases_removed():
  # The ablations drop the excitation's biases: C//16 + C per block fewer.
  params = count('se_resnet50', se=SESpec(bias=False))
  assert params == TIMM['se_resnet50'] - sum(n * (c // 16 + c) for n, c in RESNET50_UNITS)
