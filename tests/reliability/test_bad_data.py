"""Bad data: undecodable images are skipped and counted; missing or empty data is explained."""

import os

import pytest

from tests.integration import harness


# One worker runs both tiny-ImageNet trainings, so the second loads the program compiled.
@pytest.mark.xdist_group('tiny_imagenet_program')
@pytest.mark.slow
def test_undecodable_jpegs_are_skipped_and_counted(corrupt_imagenet, jax_cache, tmp_path):
  tiny, data_dir = corrupt_imagenet  # one truncated JPEG in each split
  workdir = tmp_path / 'run'
  # 12 decodable train images, batch 4: 6 steps are two epochs, two skips.
  code, out, err = harness.run(workdir, data_dir, '--config.num_train_steps=6',
                               '--config.log_every_steps=3', base=harness.IMAGENET_FLAGS,
                               cache_dir=jax_cache)
  assert code == 0, harness.describe(code, out, err)
  train = [r for r in harness.metric_lines(workdir) if r['split'] == 'train']
  assert train[-1]['step'] == 6 and train[-1]['undecodable_images'] >= 1
  assert all(r['count'] == 12 for r in train)  # full batches all the same
  assert 'undecodable training image(s) skipped' in err
  (final,) = [r for r in harness.metric_lines(workdir) if r['split'] == 'eval']
  assert final['count'] == len(tiny.validation) - 1 and final['undecodable_images'] == 1
  assert '(5 images); 1 undecodable image(s) skipped' in out


def test_missing_data_dir_says_what_to_do(digits_run, tmp_path):
  missing = tmp_path / 'no_such_dir'
  code, out, err = digits_run(f'--config.dataset.data_dir={missing}')
  assert code == 2, harness.describe(code, out, err)
  assert f"config.dataset.data_dir='{missing}' does not exist" in err and 'create it' in err


def test_imagenet_without_its_tars_says_where_to_put_them(jax_cache, tmp_path):
  data_dir = tmp_path / 'tfds'
  data_dir.mkdir()
  code, out, err = harness.run(tmp_path / 'run', data_dir, base=harness.IMAGENET_FLAGS,
                               cache_dir=jax_cache)
  assert code == 2, harness.describe(code, out, err)
  assert 'ILSVRC2012_img_train.tar' in err and 'ILSVRC2012_img_val.tar' in err
  assert os.path.join(str(data_dir), 'downloads', 'manual') in err
  assert 'config.dataset.manual_dir' in err and 'image-net.org' in err


def test_empty_split_is_an_error(digits_run):
  code, out, err = digits_run('--config.dataset.eval_split=test[:0]')
  assert code == 2, harness.describe(code, out, err)
  assert "config.dataset.eval_split='test[:0]' of digits has no examples" in err
