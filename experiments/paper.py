"""The paper's ablation results, as data for the report.

Source: Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks",
arXiv 1709.01507 (TPAMI version), Tables 10-16: SE-ResNet-50 on ImageNet,
single 224x224 crop, top-1 / top-5 error in %, parameters in millions; the
plain ResNet-50 of the ablation study is 23.30 / 6.55 with 25.6M parameters.
Recipe of those runs: SGD momentum 0.9, lr 0.1, label smoothing, excitation
FC layers without biases, one machine with 8 GPUs.

Each row carries the config overrides (as a sweep file writes them) of the
setting it reports, so that the report can put the paper's row beside ours.
Stage indices are 0-based: the paper's "stage 2" (conv2_x) is stage 0.
"""

import dataclasses
from typing import Mapping, Optional

SOURCE = 'Hu et al., Squeeze-and-Excitation Networks, arXiv 1709.01507, Tables 10-16'
SETTING = 'SE-ResNet-50, ImageNet, 224x224 single crop'


@dataclasses.dataclass(frozen=True)
class Row:
  table: str
  label: str
  overrides: Mapping[str, object]
  top1: float
  top5: float
  params_m: Optional[float] = None
  gflops: Optional[float] = None


def _se(field, value):
  return {f'model.se.{field}': value}


BASELINE = Row('Tables 10-16', 'ResNet-50 (no SE)', {'model.name': 'resnet50'}, 23.30, 6.55, 25.6)

ROWS = (
    # Table 10: reduction ratio r.
    Row('Table 10', 'r = 2', _se('reduction', 2), 22.29, 6.00, 45.7),
    Row('Table 10', 'r = 4', _se('reduction', 4), 22.25, 6.09, 35.7),
    Row('Table 10', 'r = 8', _se('reduction', 8), 22.26, 5.99, 30.7),
    Row('Table 10', 'r = 16', _se('reduction', 16), 22.28, 6.03, 28.1),
    Row('Table 10', 'r = 32', _se('reduction', 32), 22.72, 6.20, 26.9),
    # Table 11: squeeze operator.
    Row('Table 11', 'max', _se('squeeze', 'max'), 22.57, 6.09),
    Row('Table 11', 'avg', _se('squeeze', 'avg'), 22.28, 6.03),
    # Table 12: excitation gate.
    Row('Table 12', 'ReLU', _se('gate', 'relu'), 23.47, 6.98),
    Row('Table 12', 'Tanh', _se('gate', 'tanh'), 23.00, 6.38),
    Row('Table 12', 'Sigmoid', _se('gate', 'sigmoid'), 22.28, 6.03),
    # Table 13: SE blocks in one stage only, or in all.
    Row('Table 13', 'SE stage 2 only', _se('stages', (0,)), 23.03, 6.48, 25.6),
    Row('Table 13', 'SE stage 3 only', _se('stages', (1,)), 23.04, 6.32, 25.7),
    Row('Table 13', 'SE stage 4 only', _se('stages', (2,)), 22.68, 6.22, 26.4),
    Row('Table 13', 'SE all', _se('stages', None), 22.28, 6.03, 28.1),
    # Table 14: integration strategy (Fig. 5).
    Row('Table 14', 'SE (standard)', _se('integration', 'standard'), 22.28, 6.03),
    Row('Table 14', 'SE-PRE', _se('integration', 'pre'), 22.23, 6.00),
    Row('Table 14', 'SE-POST', _se('integration', 'post'), 22.78, 6.35),
    Row('Table 14', 'SE-Identity', _se('integration', 'identity'), 22.20, 6.15),
    # Table 15: SE after the unit's last conv, or after its 3x3 conv.
    Row('Table 15', 'SE', _se('position', 'last'), 22.28, 6.03, 28.1),
    Row('Table 15', 'SE_3x3', _se('position', '3x3'), 22.48, 6.02, 25.8),
    # Table 16: the role of the squeeze.
    Row('Table 16', 'NoSqueeze', _se('squeeze', 'none'), 22.93, 6.39, 28.1, 4.27),
    Row('Table 16', 'SE', _se('squeeze', 'avg'), 22.28, 6.03, 28.1, 3.87),
)

TABLES = tuple(sorted({r.table for r in ROWS}, key=lambda t: int(t.split()[1])))


def _normal(overrides: Mapping[str, object]) -> dict:
  return {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}


def find(overrides: Mapping[str, object], tables=None) -> Optional[Row]:
  """The paper's row for a run's (untranslated) overrides, from `tables` (default: all)."""
  wanted = _normal(overrides)
  if wanted == _normal(BASELINE.overrides):
    return BASELINE
  for row in ROWS:
    if (tables is None or row.table in tables) and _normal(row.overrides) == wanted:
      return row
  return None
