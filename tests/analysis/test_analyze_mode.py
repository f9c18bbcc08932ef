"""`main.py --mode=analyze` on a briefly trained SE-ResNet-20: what it counts and writes."""

import csv

import pytest

from se_flax.data import datasets
from tests.integration import harness

# One worker runs these in turn: the first builds the trained run and compiles the analysis,
# the others find both ready instead of waiting for the run and compiling the same program.
pytestmark = pytest.mark.xdist_group('analyze_trained')

MODEL = ('--config.model.name=se_cifar_resnet20', '--config.num_train_steps=3')
# SE-ResNet-20: three stages of three units, 16, 32 and 64 channels; one SE block per unit.
BLOCK_CHANNELS = [16] * 3 + [32] * 3 + [64] * 3


@pytest.fixture(scope='session')
def trained_once(shared_root, digits_data, jax_cache):
  """A briefly trained SE-ResNet-20, built once for every worker.

  Its programs at -O0 (tests/xla.py): a single 3-step run compiles them and runs them little,
  26 s instead of 35 s on an idle 2-core machine.
  """
  build = lambda path: harness.run_ok(path / 'run', digits_data, *MODEL, cache_dir=jax_cache,
                                      fast_compile=True)
  return harness.shared(shared_root, 'analyze_trained', build) / 'run'


@pytest.fixture
def trained(trained_once, tmp_path):
  """A private copy: each analysis writes WORKDIR/analysis."""
  return harness.copy_run(trained_once, tmp_path / 'run')


def _analyze(workdir, digits_data, jax_cache, *flags):
  return harness.run(workdir, digits_data, *MODEL, '--mode=analyze', *flags, cache_dir=jax_cache,
                     log=f'{workdir}.analyze')


def _blocks(workdir):
  with open(workdir / 'analysis' / 'blocks.csv') as f:
    return list(csv.DictReader(f))


def test_counts_the_images_it_is_told_to(trained, digits_data, jax_cache):
  # 50 is not a multiple of the eval batch: the last batch counts in part.
  code, out, err = _analyze(trained, digits_data, jax_cache, '--config.analysis.num_images=50',
                            '--config.analysis.classes=(2, 7)')
  assert code == 0, harness.describe(code, out, err)
  summary = (trained / 'analysis' / 'summary.txt').read_text()
  assert summary.splitlines()[0] == '9 SE blocks, 50 images.'
  assert summary in out + '\n'
  assert [int(r['channels']) for r in _blocks(trained)] == BLOCK_CHANNELS
  assert sorted(p.name for p in (trained / 'analysis').glob('stage*.png')) == [
      'stage0.png', 'stage1.png', 'stage2.png'
  ]


def test_more_images_than_the_split_holds_counts_the_split(trained, digits_data, jax_cache):
  code, out, err = _analyze(trained, digits_data, jax_cache, '--config.analysis.num_images=5000')
  assert code == 0, harness.describe(code, out, err)
  num_eval = datasets.get('digits').num_eval
  assert f'9 SE blocks, {num_eval} images.' in out


def test_classes_outside_the_data_set_are_refused(trained, digits_data, jax_cache):
  code, out, err = _analyze(trained, digits_data, jax_cache, '--config.analysis.classes=(10, 11)')
  assert code == 2, harness.describe(code, out, err)
  assert 'config.analysis.classes=(10, 11) names no class of digits (0..9)' in err
