"""A few steps of SE-ResNet-18 on a tiny ImageNet prepared by tfds's own imagenet2012 builder.

The tars (tests/data/tiny_imagenet.py) have the real ILSVRC2012 layout: 3
synsets x 4 train images, 6 validation images. The run is main.py with
configs/imagenet.py, i.e. train_and_evaluate, in a subprocess that shares the
compilation cache with tests/reliability/test_bad_data.py (on the same pytest worker).
"""

import math

import pytest

from tests.integration import harness


# One worker runs both tiny-ImageNet trainings, so the second loads the program compiled.
@pytest.mark.xdist_group('tiny_imagenet_program')
@pytest.mark.slow
def test_train_and_evaluate_on_tiny_imagenet(imagenet, jax_cache, tmp_path):
  tiny, data_dir = imagenet
  workdir = tmp_path / 'run'
  code, out, err = harness.run(workdir, data_dir, '--config.num_train_steps=3',
                               '--config.log_every_steps=1', base=harness.IMAGENET_FLAGS,
                               cache_dir=jax_cache)
  assert code == 0, harness.describe(code, out, err)
  assert 'se_resnet18: 11,778,592 parameters; imagenet2012 (12 train / 6 eval images' in out

  lines = harness.metric_lines(workdir)
  train = [r for r in lines if r['split'] == 'train']
  assert [r['step'] for r in train] == [1, 2, 3]
  for r in train:
    assert r['count'] == 4 and r['finite'] == 1 and r['undecodable_images'] == 0
    # A 1000-way classifier at the start: the loss is near log(1000).
    assert math.isfinite(r['loss']) and abs(r['loss'] - math.log(1000)) < 2
  (final,) = [r for r in lines if r['split'] == 'eval']
  assert final['step'] == 3 and final['count'] == len(tiny.validation) == 6
  assert 0 <= final['top1_error'] <= 1 and final['undecodable_images'] == 0
  assert harness.checkpoint_steps(workdir) == [2, 3]
