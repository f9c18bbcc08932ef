"""Each backbone with and without SE blocks: paper Tables 2 and 3.

ResNet-50/101/152, ResNeXt-50/101, VGG-16 (BN), BN-Inception and
Inception-ResNet-v2 with the ImageNet recipe of configs/imagenet.py (Table 2),
MobileNet and ShuffleNet with its mobile recipe (Table 3, section 5.1). Each
run's overrides are the fields in which `configs/imagenet.py:model=<name>`
(with `recipe=mobile` for Table 3) differs from the base config, so the crop
sizes (299 / 352 for Inception-ResNet-v2) and the recipes have one home, the
config file. The paper's errors and GFLOPs of every run are in
experiments/paper_tables23.py. On other data sets only the ResNet-50 pair has
a twin; the other runs are dropped.
"""

from configs import imagenet
from experiments import paper_tables23
from experiments import targets
from se_flax import config_lib

TITLE = 'Backbones with and without SE'
TABLES = paper_tables23.TABLES
AXIS = None
BASE = targets.Base(config='configs/imagenet.py', arg='')


def overrides_for(model: str) -> dict:
  """The fields of `model`'s config that differ from the base's, model.name first."""
  recipe = 'mobile' if model in paper_tables23.MOBILE else 'paper'
  base = imagenet.get_config(f'model={BASE.model}')
  config = imagenet.get_config(f'model={model},recipe={recipe}')
  fields = {'model.name': model}
  for key, _, value in config_lib.differences(base, config):
    fields.setdefault(key, tuple(value) if isinstance(value, list) else value)
  return fields


SWEEP = [overrides_for(row.model) for row in paper_tables23.ROWS]
