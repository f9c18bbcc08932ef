"""The paper's Tables 2 and 3 as data: each backbone with and without SE blocks.

Source: Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", arXiv
1709.01507 (TPAMI version). Table 2: ImageNet validation, single-crop top-1 /
top-5 error (%) of the paper's re-implementations ("re-implementation") and
their SE twins ("SENet"), 224x224 crops (299x299 for Inception-ResNet-v2), and
GFLOPs, which are multiply-accumulates (VGG-16's 15.47 and ResNet-50's 3.86
equal timm's GMACs). Table 3: MobileNet and ShuffleNet, with MFLOPs (stored
here as GFLOPs) and parameters in millions. `original` holds the error the
backbone's own paper reports, where Table 2 or 3 lists one.

Rows name our preset (`model`), so a run of experiments/architectures.py finds
its row by `find(run.overrides)`, as experiments.paper.find does for the
ablation tables.
"""

import dataclasses
from typing import Mapping, Optional

SOURCE = 'Hu et al., Squeeze-and-Excitation Networks, arXiv 1709.01507, Tables 2 and 3'
SETTING = 'ImageNet validation, single crop (224; 299 for Inception-ResNet-v2)'


@dataclasses.dataclass(frozen=True)
class Row:
  table: str
  label: str
  model: str  # our preset
  top1: float
  top5: float
  gflops: float
  params_m: Optional[float] = None
  original: Optional[tuple] = None  # (top-1, top-5 or None) from the backbone's own paper

  @property
  def overrides(self) -> dict:
    return {'model.name': self.model}


def _pair(table, label, plain, se, plain_errors, se_errors, gflops, params=(None, None),
          original=None):
  return (Row(table, label, plain, *plain_errors, gflops[0], params[0],
              original), Row(table, f'SE-{label}', se, *se_errors, gflops[1], params[1]))


ROWS = (
    *_pair('Table 2', 'ResNet-50', 'resnet50', 'se_resnet50', (24.80, 7.48), (23.29, 6.62),
           (3.86, 3.87), original=(24.7, 7.8)),
    *_pair('Table 2', 'ResNet-101', 'resnet101', 'se_resnet101', (23.17, 6.52), (22.38, 6.07),
           (7.58, 7.60), original=(23.6, 7.1)),
    *_pair('Table 2', 'ResNet-152', 'resnet152', 'se_resnet152', (22.42, 6.34), (21.57, 5.73),
           (11.30, 11.32), original=(23.0, 6.7)),
    *_pair('Table 2', 'ResNeXt-50', 'resnext50_32x4d', 'se_resnext50_32x4d', (22.11, 5.90),
           (21.10, 5.49), (4.24, 4.25), original=(22.2, None)),
    *_pair('Table 2', 'ResNeXt-101', 'resnext101_32x4d', 'se_resnext101_32x4d', (21.18, 5.57),
           (20.70, 5.01), (7.99, 8.00), original=(21.2, 5.6)),
    *_pair('Table 2', 'VGG-16', 'vgg16_bn', 'se_vgg16_bn', (27.02, 8.81), (25.22, 7.70),
           (15.47, 15.48)),
    *_pair('Table 2', 'BN-Inception', 'bn_inception', 'se_bn_inception', (25.38, 7.89),
           (24.23, 7.14), (2.03, 2.04), original=(25.2, 7.82)),
    *_pair('Table 2', 'Inception-ResNet-v2', 'inception_resnet_v2', 'se_inception_resnet_v2',
           (20.37, 5.21), (19.80, 4.79), (11.75, 11.76), original=(19.9, 4.9)),
    *_pair('Table 3', 'MobileNet', 'mobilenet_v1', 'se_mobilenet_v1', (28.4, 9.4), (25.3, 7.7),
           (0.569, 0.572), (4.2, 4.7), original=(29.4, None)),
    *_pair('Table 3', 'ShuffleNet', 'shufflenet_v1_g3', 'se_shufflenet_v1_g3', (32.6, 12.5),
           (31.0, 11.1), (0.140, 0.142), (1.8, 2.4), original=(32.6, None)),
)

TABLES = ('Table 2', 'Table 3')
# Models trained with the mobile recipe (configs/imagenet.py recipe=mobile), as section 5.1 does.
MOBILE = tuple(r.model for r in ROWS if r.table == 'Table 3')


def find(overrides: Mapping[str, object], tables=None) -> Optional[Row]:
  """The paper's row for a run's overrides (its model name decides), from `tables` (default: all)."""
  name = overrides.get('model.name')
  for row in ROWS:
    if row.model == name and (tables is None or row.table in tables):
      return row
  return None
