"""The paper's numbers in experiments/paper.py: against experiments/paper_reference.md, and the sweeps."""

import os
import re

from experiments import paper
from experiments import runs

REFERENCE = os.path.join(runs.REPO_ROOT, 'experiments', 'paper_reference.md')


def _reference():
  with open(REFERENCE) as f:
    return f.read()


def reference_ablation_rows():
  """(top-1, top-5, params or None) of each row of the reference's ablation table, in order."""
  block = _reference().split('Ablations on SE-ResNet-50', 1)[1].split('\n\n', 2)[1]
  rows = []
  for line in block.splitlines():
    m = re.search(r'\| ([\d.]+) / ([\d.]+) \|\s*([\d.]+)?M?', line)
    if m:
      rows.append((float(m.group(1)), float(m.group(2)), float(m.group(3)) if m.group(3) else None))
  return rows


def test_rows_equal_the_reference_table():
  # Table 16's SE row repeats the standard SE-ResNet-50, which the reference lists once (r = 16).
  ours = [
      (r.top1, r.top5, r.params_m) for r in paper.ROWS if (r.table, r.label) != ('Table 16', 'SE')
  ]
  assert ours == reference_ablation_rows()
  standard = paper.find({'model.se.reduction': 16}, ('Table 10',))
  assert paper.find({'model.se.squeeze': 'avg'}, ('Table 16',)).top1 == standard.top1
  assert (paper.BASELINE.top1, paper.BASELINE.top5, paper.BASELINE.params_m) == (23.30, 6.55, 25.6)
  baseline = re.search(r'baseline ResNet-50 ([\d.]+) / ([\d.]+), ([\d.]+)M params', _reference())
  assert tuple(float(v) for v in baseline.groups()) == (23.30, 6.55, 25.6)


def test_gflops_equal_the_reference():
  text = _reference()
  no_squeeze = re.search(r'NoSqueeze .*, ([\d.]+) GFLOPs \|', text)
  assert paper.find({'model.se.squeeze': 'none'}).gflops == float(no_squeeze.group(1))
  # Table 2: ResNet-50's GFLOPs, plain / SE.
  table2 = re.search(r'^\| ResNet-50 \|.*\| ([\d.]+) / ([\d.]+) \|$', text, re.M)
  assert paper.find({'model.se.squeeze': 'avg'}, ('Table 16',)).gflops == float(table2.group(2))


def test_every_table_row_has_a_run_in_its_sweep():
  for name in ('reduction_ratio', 'squeeze', 'excitation', 'stages', 'integration', 'position'):
    module = runs.load_sweep(os.path.join(runs.REPO_ROOT, 'experiments', f'{name}.py'))
    swept = [{
        k: list(v) if isinstance(v, tuple) else v for k, v in o.items()
    } for o in module.SWEEP]
    for row in paper.ROWS:
      if row.table in module.TABLES:
        wanted = {k: list(v) if isinstance(v, tuple) else v for k, v in row.overrides.items()}
        assert wanted in swept, (name, row.label)


def test_find_matches_lists_and_tuples_and_the_baseline():
  assert paper.find({'model.se.stages': [0]}).label == 'SE stage 2 only'
  assert paper.find({'model.se.reduction': 8}, ('Table 10',)).top1 == 22.26
  assert paper.find({'model.se.reduction': 8}, ('Table 12',)) is None
  assert paper.find({'model.name': 'resnet50'}) is paper.BASELINE
  assert paper.find({'model.se.squeeze': 'gem'}) is None
