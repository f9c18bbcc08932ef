"""Under a modern recipe's pieces, a stopped and restarted run ends exactly where an unbroken one does.

configs/digits.py:recipe=rsb_a3 (LAMB, BCE with a 0.2 threshold, Mixup and
CutMix, RandAugment) plus every other piece: stochastic depth, random
erasing, gradient clipping and an EMA of the weights. Each piece draws from
(seed, step) or (seed, epoch, example), so 4 steps, a restart and 4 more give
the same checkpoint, EMA included, and the same metrics.jsonl lines as 8
steps in one go. The stopped run is the unbroken run's workdir cut back to
its step-4 checkpoint (a checkpoint does not depend on the steps after it);
tests/integration/test_resume.py stops real processes.
"""

import shutil

from tests.integration import harness

STEPS = 8
RECIPE_FLAGS = (
    '--config=configs/digits.py:recipe=rsb_a3',
    *harness.DIGITS_FLAGS[1:],
    f'--config.num_train_steps={STEPS}',
    '--config.eval_every_steps=4',
    '--config.model.drop_path_rate=0.1',
    '--config.dataset.random_erasing=0.5',
    '--config.optimizer.grad_clip_norm=1.0',
    '--config.ema.decay=0.9',
)


def test_recipe_pieces_resume_bitwise(digits_data, jax_cache, tmp_path):
  run = lambda workdir, *flags: harness.run_ok(workdir, digits_data, *flags, base=RECIPE_FLAGS,
                                               devices=1, cache_dir=jax_cache)
  whole = tmp_path / 'whole'
  run(whole)
  # The run as a stop after step 4 leaves it: checkpoints up to 4, and metric lines written
  # past it that the restart must drop and write again.
  split = harness.copy_run(whole, tmp_path / 'split')
  for step in harness.checkpoint_steps(split):
    if step > 4:
      shutil.rmtree(split / 'checkpoints' / str(step))
  out, _ = run(split)
  assert 'Resuming from checkpoint step 4' in out

  arrays = harness.checkpoint_arrays(whole)
  assert any(k.startswith('ema_params/') for k in arrays), sorted(arrays)[:5]
  harness.assert_same_arrays(harness.checkpoint_arrays(split), arrays)
  lines = harness.metric_lines(split, after=4)
  assert lines == harness.metric_lines(whole, after=4)
  assert {r['split'] for r in lines} >= {'train', 'eval', 'eval_ema'}
