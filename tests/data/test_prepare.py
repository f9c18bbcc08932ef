"""The preparation command: prepares into a given data_dir, and explains missing ImageNet tars."""

import os

from se_flax.data import prepare


def test_prepares_digits_then_reports_prepared(tmp_path, capsys):
  data_dir = tmp_path / 'tfds'
  assert prepare.main(['--dataset=digits', f'--data_dir={data_dir}']) == 0
  out = capsys.readouterr().out
  assert 'digits/train: 1437 examples' in out and 'digits/test: 360 examples' in out
  assert os.path.isfile(data_dir / 'digits' / '1.0.0' / 'dataset_info.json')
  assert prepare.main(['--dataset=digits', f'--data_dir={data_dir}']) == 0
  assert 'already prepared' in capsys.readouterr().out


def test_imagenet_without_tars_names_them(tmp_path, capsys):
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'ILSVRC2012_img_val.tar').write_bytes(b'')
  code = prepare.main(
      ['--dataset=imagenet2012', f'--data_dir={tmp_path / "tfds"}', f'--manual_dir={manual}'])
  assert code == 2
  err = capsys.readouterr().err
  assert 'ILSVRC2012_img_train.tar not found' in err and str(manual) in err
