"""The report: tables with ours and the paper's numbers, unfinished runs marked, PNGs written."""

import json
import os

import pytest

from experiments import manifest as manifest_lib
from experiments import report
from experiments import sweep
from tests.experiments import fake_runs

# Its module fixture is built once: every test of the file runs on the same pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('test_report')

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def make_sweep(root, sweep_file, *extra, runner=None):
  code = sweep.main(
      [sweep_file, f'--root={root}', '--dataset=digits', '--set=num_train_steps=6', *extra],
      runner=runner or fake_runs.FakeMain(), say=lambda _: None)
  assert code in (0, 1)


def table_rows(text, title):
  """{setting: [cells]} of the markdown table in the section whose heading starts with `title`."""
  section = text.split(f'## {title}', 1)[1].split('\n## ', 1)[0]
  rows = [[c.strip()
           for c in line.strip()[1:-1].split(' | ')]
          for line in section.splitlines()
          if line.startswith('| ') and not line.startswith('| setting')]
  return {cells[0]: cells for cells in rows}


@pytest.fixture(scope='module')
def sweeps_dir(tmp_path_factory):
  """A reduction-ratio sweep with one run in progress and one failed, and a finished stages sweep."""
  root = str(tmp_path_factory.mktemp('sweeps'))
  rr = os.path.join(root, 'rr')
  make_sweep(rr, 'experiments/reduction_ratio.py',
             runner=fake_runs.FakeMain(crash_at={'se_reduction=8': 2}))
  # se_reduction=16 is still training: metrics up to step 4, no final checkpoint.
  fake_runs.train(os.path.join(rr, 'se_reduction=16'), total=6)
  workdir = os.path.join(rr, 'se_reduction=16')
  fake_runs.write_records(workdir, [r for r in fake_runs.read_records(workdir) if r['step'] <= 4])
  os.rename(os.path.join(workdir, 'checkpoints', '6'), os.path.join(workdir, 'old6'))
  manifest_lib.Manifest(rr).update('se_reduction=16', status='running')
  make_sweep(os.path.join(root, 'stages'), 'experiments/stages.py')
  report.write_report(root)
  return root


def test_report_has_a_table_per_sweep_with_ours_and_the_papers(sweeps_dir):
  with open(os.path.join(sweeps_dir, 'report.md')) as f:
    text = f.read()
  assert '## Reduction ratio r on digits (`reduction_ratio`, paper Table 10)' in text
  assert '## SE stages on digits (`stages`, paper Table 13)' in text
  rows = table_rows(text, 'Reduction ratio r')
  r2 = rows['se.reduction=2']
  assert r2[1] == 'done'
  final = 100 * fake_runs.top1_of('se_reduction=2')
  assert r2[4] == f'{final:.2f}' and r2[6] == f'{final:.2f}'  # final and best top-1
  assert r2[8:12] == ['Table 10: r = 2', '22.29', '6.00', '45.7M']
  assert int(r2[2].replace(',', '')) > int(rows['se.reduction=4'][2].replace(',', ''))
  assert float(r2[3]) > 0 and float(r2[7].replace(',', '')) > 0
  baseline = rows['model=cifar_resnet20']
  assert baseline[8:11] == ['Tables 10-16: ResNet-50 (no SE)', '23.30', '6.55']
  stage = table_rows(text, 'SE stages')['se.stages=(0,)']
  assert stage[8:11] == ['Table 13: SE stage 2 only', '23.03', '6.48']


def test_unfinished_runs_are_marked_not_dropped(sweeps_dir):
  with open(os.path.join(sweeps_dir, 'report.md')) as f:
    text = f.read()
  rows = table_rows(text, 'Reduction ratio r')
  assert rows['se.reduction=8'][1] == 'failed (exit 1) at step 2/6'
  assert rows['se.reduction=16'][1] == 'in progress at step 4/6'
  assert rows['se.reduction=32'][1] == 'not run on digits'
  assert '22.72' in rows['se.reduction=32']  # the paper's row stays
  assert 'not run: se.reduction=32: config.model.se.reduction=32 exceeds the 16 channels' in text
  assert '`se_reduction=16` (in progress at step 4/6)' in text


def test_plots_are_written_and_linked(sweeps_dir):
  with open(os.path.join(sweeps_dir, 'report.md')) as f:
    text = f.read()
  for name in ('reduction_ratio_digits_curves.png', 'reduction_ratio_digits_error.png',
               'reduction_ratio_digits_params.png', 'stages_digits_curves.png',
               'stages_digits_bars.png'):
    path = os.path.join(sweeps_dir, name)
    with open(path, 'rb') as f:
      assert f.read(8) == PNG_MAGIC, name
    assert f']({name})' in text


def test_report_of_one_sweep_directory(sweeps_dir):
  path = report.write_report(os.path.join(sweeps_dir, 'stages'))
  with open(path) as f:
    text = f.read()
  assert 'Reduction ratio' not in text and 'SE stages' in text
  assert os.path.exists(os.path.join(sweeps_dir, 'stages', 'stages_digits_bars.png'))


def test_runs_without_a_manifest_use_their_checkpoint_configs(tmp_path):
  from experiments import runs  # pylint: disable=g-import-not-at-top
  for r in (2, 8):
    config = runs.parse_config('configs/digits.py', f'r={r}', ['--config.num_train_steps=4'])
    workdir = str(tmp_path / f'run_r{r}')
    fake_runs.train(workdir, total=4)
    fake_runs.save_checkpoint(workdir, 4, json.loads(config.to_json_best_effort()))
  path = report.write_report(str(tmp_path))
  with open(path) as f:
    text = f.read()
  rows = table_rows(text, str(tmp_path.name))
  assert rows['se.reduction=2'][1] == 'done'
  assert rows['se.reduction=8'][8:10] == ['Table 10: r = 8', '22.26']


def test_empty_directory_is_an_error(tmp_path):
  assert report.main([str(tmp_path)]) == 2


def test_two_sweeps_of_one_file_keep_their_own_plots(tmp_path):
  for sub in ('a', 'b'):
    make_sweep(str(tmp_path / sub), 'experiments/position.py')
  with open(report.write_report(str(tmp_path))) as f:
    text = f.read()
  assert '](position_digits_bars.png)' in text and '](position_digits_b_bars.png)' in text


def test_the_recipe_sweep_puts_the_published_figures_beside_each_run(tmp_path):
  root = str(tmp_path / 'recipes')
  make_sweep(root, 'experiments/recipes.py')
  with open(report.write_report(root, with_plots=False)) as f:
    text = f.read()
  rows = table_rows(text, 'SE under the paper recipe')
  cells = {setting: (row[-4], row[-3], row[-2]) for setting, row in rows.items()}
  # On digits the runs are the CIFAR twins; the published rows are those of their ImageNet setting.
  assert cells == {
      'model=cifar_resnet20, recipe=paper': ('Table 2: ResNet-50', '24.80', '7.48'),
      'model=se_cifar_resnet20, recipe=paper': ('Table 2: SE-ResNet-50', '23.29', '6.62'),
      'model=cifar_resnet20, recipe=rsb_a3': ('RSB Table 1: ResNet-50, A3', '21.90', ''),
      'model=se_cifar_resnet20, recipe=rsb_a3': ('', '', ''),
  }, text
  assert 'Paper columns: Hu et al., arXiv 1709.01507, Table 2; Wightman et al.' in text
