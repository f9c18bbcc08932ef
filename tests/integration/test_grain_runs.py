"""main.py with config.dataset.loader=grain: digits and a tiny ImageNet, trained and evaluated.

Every run goes through grain_probe.py, which is main.py unchanged but writes
the example indices of the training rows the loader yields and says whether
TensorFlow was imported. The digits runs are harness.DIGITS_FLAGS with the
grain loader, the same compiled program as the tf.data runs of
tests/integration (shared through the compilation cache); the expected
streams come from the grain loader read in this process.
"""

import json
import math
import pathlib
import re

import pytest

from se_flax.data import grain_source
from se_flax.data import prepare
from se_flax.train import checkpoint as ckpt_lib
from se_flax.train import loop
from tests.data import tiny_imagenet
from tests.integration import harness

GRAIN = '--config.dataset.loader=grain'
PROBE = 'tests/integration/grain_probe.py'
NO_TENSORFLOW = 'tensorflow imported: False'
DIGITS_EVAL = 360


def _prepare_digits(path):
  assert prepare.main(['--dataset=digits', f'--data_dir={path}']) == 0


@pytest.fixture(scope='session')
def grain_digits(shared_root):
  """A data_dir with digits and its ArrayRecord copy, written by `prepare`."""
  return harness.shared(shared_root, 'grain_digits', _prepare_digits)


def _run(workdir, data_dir, *flags, cache_dir, **kwargs):
  """(code, out, err, indices): a grain run through the probe; indices holds one list per batch
  the loader yielded."""
  indices = pathlib.Path(f'{workdir}.indices')
  indices.unlink(missing_ok=True)
  code, out, err = harness.run(workdir, data_dir, GRAIN, *flags, script=PROBE, cache_dir=cache_dir,
                               env_extra={'GRAIN_PROBE_INDICES': indices}, **kwargs)
  rows = [json.loads(line) for line in indices.read_text().splitlines()] if indices.exists() else []
  return code, out, err, rows


@pytest.fixture(scope='session')
def grain_reference(shared_root, grain_digits, jax_cache):
  """The workdir of an uninterrupted grain run of harness.DIGITS_FLAGS; beside it `run.log.out`
  and `run.indices`."""

  def build(path):
    code, out, err, _ = _run(path / 'run', grain_digits, cache_dir=jax_cache)
    assert code == 0, harness.describe(code, out, err)

  return harness.shared(shared_root, 'grain_reference', build) / 'run'


def _indices(workdir):
  return [json.loads(line) for line in pathlib.Path(f'{workdir}.indices').read_text().splitlines()]


def _stream(workdir, positions):
  """Example indices at global stream positions [0, positions) of the run's stored config, read
  from the grain loader in this process at a batch of its own (positions do not depend on it)."""
  config, _ = ckpt_lib.stored_config(workdir)
  batches = grain_source.train_batches(config.dataset, global_batch_size=8, seed=config.seed,
                                       process_index=0, process_count=1)
  out = []
  while len(out) < positions:
    next(batches)
    out += batches.indices.tolist()
  return out[:positions]


def test_digits_trains_evaluates_every_example_and_imports_no_tensorflow(
    grain_reference, jax_cache, tmp_path):
  out = pathlib.Path(f'{grain_reference}.log.out').read_text()
  assert out.splitlines()[-1] == NO_TENSORFLOW
  lines = harness.metric_lines(grain_reference)
  train = [r for r in lines if r['split'] == 'train']
  assert [r['step'] for r in train] == [4, 8, 12, 16, 20]
  for r in train:
    assert math.isfinite(r['loss']) and r['finite'] == 1 and r['undecodable_images'] == 0
  evals = [r for r in lines if r['split'] == 'eval']
  assert [(r['step'], r['count'], r['undecodable_images']) for r in evals] == [(10, DIGITS_EVAL, 0),
                                                                               (20, DIGITS_EVAL, 0)]
  assert 'eval at step 20: ' in out and f'({DIGITS_EVAL} images)' in out
  # main.py fed the loader's stream from position 0, batch after batch.
  fed = sum(_indices(grain_reference)[:harness.STEPS], [])
  assert fed == _stream(grain_reference, harness.STEPS * 32)

  # Evaluated from the checkpoint with the config stored there: every example once.
  workdir = harness.copy_run(grain_reference, tmp_path / 'run')
  code, out, err = harness.run(workdir, None, '--mode=eval', base=(), script=PROBE,
                               log=tmp_path / 'eval', cache_dir=jax_cache)
  assert code == 0, harness.describe(code, out, err)
  match = re.search(r'step 20 on digits/test: top-1 error ([\d.]+) .* (\d+) images\n', out)
  assert match and int(match.group(2)) == DIGITS_EVAL, out
  assert float(match.group(1)) == round(evals[-1]['top1_error'], 4)
  assert out.splitlines()[-1] == NO_TENSORFLOW


@pytest.mark.parametrize('k', [7])
def test_k_steps_then_n_equals_n_steps(grain_reference, grain_digits, jax_cache, tmp_path, k):
  workdir = tmp_path / 'run'
  code, out, err, first = _run(workdir, grain_digits, f'--config.num_train_steps={k}',
                               cache_dir=jax_cache)
  assert code == 0, harness.describe(code, out, err)
  code, out, err, second = _run(workdir, grain_digits, cache_dir=jax_cache)
  assert code == 0, harness.describe(code, out, err)
  assert f'Resuming from checkpoint step {k} ' in out and out.splitlines()[-1] == NO_TENSORFLOW
  harness.assert_same_arrays(harness.checkpoint_arrays(workdir),
                             harness.checkpoint_arrays(grain_reference))
  assert harness.metric_lines(workdir, after=k) == harness.metric_lines(grain_reference, after=k)
  assert first[:k] + second[:harness.STEPS - k] == _indices(grain_reference)[:harness.STEPS]


def _examples_taken(workdir):
  """{step: the training examples taken, as stored with that checkpoint}."""
  with ckpt_lib.TrainCheckpointer(workdir, read_only=True) as checkpointer:
    return {
        step: checkpointer.restore_loop_state(step)[loop.EXAMPLES_KEY]
        for step in checkpointer.all_steps()
    }


def test_resume_at_another_batch_size_continues_at_the_examples_taken(grain_reference, grain_digits,
                                                                      jax_cache, tmp_path):
  # Moved to a global batch of 64 after 20 steps of 32, with a learning rate that learns in a
  # few steps (the reference's drops tenfold every 9 steps).
  workdir = harness.copy_run(grain_reference, tmp_path / 'run')
  taken, more, batch = harness.STEPS * 32, 10, 64
  code, out, err, fed = _run(workdir, grain_digits, f'--config.batch_size={batch}',
                             f'--config.num_train_steps={harness.STEPS + more}',
                             '--config.learning_rate=0.4', '--config.schedule.step_epochs=10',
                             cache_dir=jax_cache, fast_compile=True)
  assert code == 0, harness.describe(code, out, err)
  assert 'config.batch_size: 32 in the checkpoint, 64 now' in out
  assert f'Resuming from checkpoint step {harness.STEPS} ' in out
  # The data continue where 20 x 32 examples left them, not at 20 x 64.
  assert sum(fed[:more], []) == _stream(workdir, taken + more * batch)[taken:]
  stored = _examples_taken(workdir)
  assert stored == {
      s: taken + (s - harness.STEPS) * batch if s > harness.STEPS else s * 32 for s in stored
  }
  assert max(stored) == harness.STEPS + more
  final = [r for r in harness.metric_lines(workdir) if r['split'] == 'eval'][-1]
  assert final['step'] == harness.STEPS + more and final['count'] == DIGITS_EVAL
  # It learns: above the 10% of guessing by more than 3 standard deviations of guessing's
  # accuracy over 360 images (1.6%).
  assert final['top1_error'] < 0.85


def test_a_checkpoint_without_the_count_continues_at_its_own_batch_size(grain_reference, tmp_path):
  workdir = harness.copy_run(grain_reference, tmp_path / 'run')
  config, step = ckpt_lib.stored_config(workdir)
  config.batch_size = 64
  with ckpt_lib.TrainCheckpointer(workdir, read_only=True) as checkpointer:
    loop_state = checkpointer.restore_loop_state(step)
    assert loop._examples_taken(checkpointer, loop_state, step, config) == step * 32
    del loop_state[loop.EXAMPLES_KEY]  # as saved before the count was stored
    assert loop._examples_taken(checkpointer, loop_state, step, config) == step * 32


# ---------------------------------------------------------------- tiny ImageNet


@pytest.fixture(scope='module')
def grain_imagenet(tmp_path_factory):
  """(TinyImagenet, data_dir): one truncated JPEG in each split, prepared with the ArrayRecord
  copy by `prepare`."""
  root = tmp_path_factory.mktemp('grain_imagenet_run')
  return tiny_imagenet.make_and_prepare(root, num_corrupt=1, num_corrupt_val=1)


# The tiny-ImageNet trainings of tests/integration and tests/reliability compile this program.
@pytest.mark.xdist_group('tiny_imagenet_program')
@pytest.mark.slow
def test_tiny_imagenet_trains_counts_undecodable_images_and_evaluates_exactly(
    grain_imagenet, jax_cache, tmp_path):
  tiny, data_dir = grain_imagenet
  train_size, eval_size = len(tiny.train) + 1, len(tiny.validation)
  workdir = tmp_path / 'run'
  # 4 steps of 4 cross the end of the first epoch: the truncated JPEG was met.
  code, out, err, fed = _run(workdir, data_dir, '--config.num_train_steps=4',
                             '--config.log_every_steps=2', base=harness.IMAGENET_FLAGS,
                             cache_dir=jax_cache)
  assert code == 0, harness.describe(code, out, err)
  assert out.splitlines()[-1] == NO_TENSORFLOW
  assert f'({train_size} train / {eval_size} eval images' in out
  lines = harness.metric_lines(workdir)
  train = [r for r in lines if r['split'] == 'train']
  assert [r['step'] for r in train] == [2, 4]
  for r in train:
    assert r['count'] == 8 and r['finite'] == 1 and math.isfinite(r['loss'])
  assert train[-1]['undecodable_images'] == 1 and 'undecodable training image(s) skipped' in err
  # The first epoch shows every decodable example once, the undecodable one's stand-in twice.
  first_epoch = sum(fed[:4], [])[:train_size]
  assert len(set(first_epoch)) == train_size - 1
  (final,) = [r for r in lines if r['split'] == 'eval']
  assert final['count'] == eval_size - 1 and final['undecodable_images'] == 1
  assert f'({eval_size - 1} images); 1 undecodable image(s) skipped' in out

  code, out, err = harness.run(workdir, None, '--mode=eval', base=(), script=PROBE,
                               log=tmp_path / 'eval', cache_dir=jax_cache, fast_compile=True)
  assert code == 0, harness.describe(code, out, err)
  assert (f'se_resnet18 step 4 on imagenet2012/validation: top-1 error '
          f'{final["top1_error"]:.4f}') in out
  assert f'{eval_size - 1} images (1 undecodable image(s) skipped)' in out
  assert out.splitlines()[-1] == NO_TENSORFLOW
  assert harness.checkpoint_steps(workdir) == [2, 4]
