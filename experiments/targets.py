"""The paper's ablation setting and where else a sweep can run it.

Every sweep file names the paper's own setting, `PAPER_ABLATION`: SE-ResNet-50
on ImageNet with the recipe of the paper's ablation study (arXiv 1709.01507,
section 6 and the reference README's "Ablation setup"): SGD with momentum 0.9,
learning rate 0.1, label smoothing, and no biases in the excitation's FC
layers. The batch of 256 at lr 0.1 is the usual linear-scaling reading of
"lr 0.1 on 8 GPUs"; the schedule is configs/imagenet.py's (step, 100 epochs).

`TARGETS` maps `--dataset` to the config that stands in for that setting on
another data set, and to the SE model that stands in for se_resnet50. Only the
SE block's own settings and label smoothing carry over from the paper's
recipe; each data set keeps its config's optimiser and schedule, because lr
0.1 at batch 256 for 100 epochs means nothing on 1,437 digits.
"""

import dataclasses
from typing import Mapping, Optional

from se_flax import models
from se_flax.data import datasets
from se_flax.train import setup


@dataclasses.dataclass(frozen=True)
class Base:
  """A base config: the file, its "key=value,..." argument, and field overrides."""
  config: str
  arg: str
  overrides: Mapping[str, object] = dataclasses.field(default_factory=dict)
  model: str = 'se_resnet50'  # the SE model whose twins the sweep's runs name
  dataset: str = 'imagenet'


PAPER_ABLATION = Base(
    config='configs/imagenet.py',
    arg='model=se_resnet50,batch=256',
    overrides={
        'learning_rate': 0.1,
        'lr_reference_batch': 256,
        'label_smoothing': 0.1,
        'model.se.bias': False,  # "we remove the biases of the FC layers in the excitation"
    },
)


@dataclasses.dataclass(frozen=True)
class Target:
  """Where a sweep runs: the config, the SE model standing in for the paper's, extra overrides.

  Attributes:
    name: the `--dataset` value.
    config: config file; None runs the base's own config and all its overrides.
    arg: the config's argument, without `model=` (set from `model`).
    model: the default SE model of this target.
    overrides: changes to the config for this target (e.g. a short schedule).
    keep: prefixes of the base's overrides that carry over to `config`.
    about: one line for the run list and the report.
  """
  name: str
  config: Optional[str]
  arg: str
  model: str
  overrides: Mapping[str, object] = dataclasses.field(default_factory=dict)
  keep: tuple = ('model.se.', 'label_smoothing')
  about: str = ''


_DIGITS_SCHEDULE = {
    # 15 epochs of 11 steps: a sweep runs in minutes on two CPU cores. SE
    # networks start slower than plain ones here (every gate begins near 0.5
    # on a zero-initialised branch) and need about 15 epochs to pass 90% test
    # accuracy; an eval every 3 epochs draws the curves. The gates are still
    # within a few hundredths of 0.5 at the end (`main.py --mode=analyze`), so
    # digits sweeps test the machinery, not the paper's differences.
    'eval_every_steps': 33,
    'checkpoint_every_steps': 66,
}

TARGETS = {
    'imagenet':
        Target('imagenet', None, '', 'se_resnet50',
               about="the paper's setting: ImageNet at 224x224 with its ablation recipe"),
    'cifar10':
        Target('cifar10', 'configs/cifar.py', 'dataset=cifar10', 'se_cifar_resnet56',
               about='CIFAR-10 with the ResNet CIFAR schedule of configs/cifar.py'),
    'cifar100':
        Target('cifar100', 'configs/cifar.py', 'dataset=cifar100', 'se_cifar_resnet56',
               about='CIFAR-100 with the ResNet CIFAR schedule of configs/cifar.py'),
    # configs/digits.py keeps r=4: at r=16 the 16-channel first stage would have one hidden unit.
    'digits':
        Target(
            'digits', 'configs/digits.py', 'epochs=15', 'se_cifar_resnet20',
            overrides=_DIGITS_SCHEDULE,
            about='the embedded 8x8 digits, 15 epochs: tests the machinery; too short for '
            'the SE gates to move far from 0.5'),
}


class Inapplicable(Exception):
  """A run that cannot be expressed on a target; the message says why."""


# The backbone without SE blocks for an SE preset name; a ValueError for any other name.
plain_twin = models.plain_twin


def base_for(base: Base, target: Target, model: Optional[str] = None):
  """(config file, config argument, common overrides) of `base` moved onto `target`."""
  model = model or target.model
  if target.config is None:
    config = base.config
    arg = ','.join(p for p in base.arg.split(',') if p and not p.startswith('model='))
    kept = dict(base.overrides)
  else:
    config, arg = target.config, target.arg
    kept = {k: v for k, v in base.overrides.items() if k.startswith(tuple(target.keep))}
  arg = ','.join(p for p in (f'model={model}', arg) if p)
  return config, arg, {**kept, **target.overrides}


def translate(overrides: Mapping[str, object], base: Base, target: Target,
              model: Optional[str] = None):
  """Moves one run's overrides onto `target`; returns (overrides, notes) or raises Inapplicable.

  A model named by the run is replaced by its twin on the target: the base's
  SE model by the target's, its plain twin by the target's plain twin.
  """
  model = model or target.model
  twins = {base.model: model, plain_twin(base.model): plain_twin(model)}
  out, notes = dict(overrides), []
  name = out.get('model.name')
  if name is not None and name != twins.get(name, name):
    out['model.name'] = twins[name]
    notes.append(f'model {name} -> {out["model.name"]}')
  elif name is not None and name not in twins.values() and target.config is not None:
    raise Inapplicable(f'config.model.name={name!r} has no {target.name} counterpart; '
                       f'this target runs {sorted(twins.values())}')
  return out, notes


def total_steps(config) -> Optional[int]:
  """The step a finished run ends at (as se_flax.train.setup counts it), or None if unknown."""
  # The registry's train-split size: the sweep knows a run's last step without reading the data.
  spec = datasets.DATASETS.get(config.dataset.name)
  if spec is None and config.num_train_steps <= 0:
    return None
  return setup.total_steps(config, datasets.steps_per_epoch(spec, config.batch_size) if spec else 0)
