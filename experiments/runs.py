"""From a sweep file to a list of runs: names, main.py commands, configs, validation, progress.

Each run's config is built by parsing the run's own `main.py` flags with
se_flax.flags, the parser main.py uses, so the config that is validated and
recorded is the one the run will train with.
"""

import dataclasses
import importlib.util
import json
import os
import re
import sys
from typing import Any, Mapping, Optional

from absl import flags
from etils import epath

from experiments import targets
from se_flax import check as check_lib
from se_flax import config_lib
from se_flax import flags as se_flags
from se_flax.errors import ConfigError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS_FILE = 'metrics.jsonl'
LOG_FILE = 'train.log'

# Readable names of a None value, where a field gives None a meaning.
_NONE_NAMES = {'model.se.stages': 'all'}


class SweepError(ValueError):
  """A sweep that cannot start; the message names the run and the field."""


@dataclasses.dataclass
class Run:
  """One planned run of a sweep."""
  name: str
  overrides: dict  # as the sweep file wrote them (the paper's setting)
  applied: dict  # run-specific overrides on the target, after translation
  args: list  # main.py arguments, without --workdir
  workdir: str
  config: Any = None  # ml_collections.ConfigDict
  total_steps: Optional[int] = None
  notes: list = dataclasses.field(default_factory=list)

  def command(self, python: Optional[str] = None) -> list:
    return [python or sys.executable, 'main.py', *self.args, f'--workdir={self.workdir}']

  def config_json(self) -> dict:
    return config_lib.as_json(self.config)


@dataclasses.dataclass
class Dropped:
  """A run of the sweep file that cannot apply to the target, and why."""
  overrides: dict
  reason: str


@dataclasses.dataclass
class Plan:
  """Everything the launchers and the manifest need about one sweep on one target."""
  sweep: str  # the sweep file's stem, e.g. 'reduction_ratio'
  sweep_file: str
  title: str
  tables: tuple
  axis: Optional[str]
  target: str
  about: str
  runs: list
  dropped: list


def load_sweep(path: str):
  """Imports a sweep file by path (it needs BASE and SWEEP)."""
  path = os.path.abspath(path)
  if not os.path.isfile(path):
    raise SweepError(f'sweep file {path} does not exist')
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  name = 'sweep_' + re.sub(r'\W', '_', os.path.splitext(os.path.basename(path))[0])
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for attr in ('BASE', 'SWEEP'):
    if not hasattr(module, attr):
      raise SweepError(f'sweep file {path} defines no {attr}')
  return module


# ---------------------------------------------------------------- names and flags

# A sweep run's key `arg.NAME` is an argument of the config file's string ("FILE:NAME=value"),
# e.g. {'arg.recipe': 'rsb_a3'}, for what a config file builds from its arguments.
ARG_PREFIX = 'arg.'


def _short_key(key: str) -> str:
  if key == 'model.name':
    return 'model'
  if key.startswith(ARG_PREFIX):
    return key[len(ARG_PREFIX):]
  return key[len('model.'):].replace('.', '_') if key.startswith('model.') else key.replace(
      '.', '_')


def _value_text(key: str, value) -> str:
  if value is None:
    return _NONE_NAMES.get(key, 'none')
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (tuple, list)):
    return '-'.join(_value_text(key, v) for v in value) or 'empty'
  return str(value)


def run_name(overrides: Mapping[str, object]) -> str:
  """A stable, readable, filesystem-safe name, e.g. 'se_reduction=8' or 'model=cifar_resnet20'."""
  if not overrides:
    return 'base'
  text = ','.join(f'{_short_key(k)}={_value_text(k, v)}' for k, v in overrides.items())
  return re.sub(r'[^A-Za-z0-9._=,+-]', '-', text)


def label(overrides: Mapping[str, object]) -> str:
  """The varied setting as a table cell, e.g. 'se.reduction=8'."""
  if not overrides:
    return 'base'
  parts = []
  for key, value in overrides.items():
    short = ('model' if key == 'model.name' else
             key[len('model.'):] if key.startswith('model.') else _short_key(key))
    if isinstance(value, (tuple, list)):
      value = '(' + ', '.join(map(str, value)) + (',)' if len(value) == 1 else ')')
    elif value is None:
      value = _NONE_NAMES.get(key, 'None')
    parts.append(f'{short}={value}')
  return ', '.join(parts)


def flag_value(value) -> str:
  """A value as config_flags parses it back (tuples as Python literals)."""
  if isinstance(value, list):
    value = tuple(value)
  if isinstance(value, (tuple, bool, int, float)):
    return repr(value)
  return str(value)


def override_flags(overrides: Mapping[str, object], base_config, run: str = '') -> list:
  """`--config.<field>=<value>` flags; a None on a field whose default is None needs no flag."""
  del run  # main.py's parser names the field of a None it refuses
  out = []
  for key, value in overrides.items():
    if value is None:
      if _lookup(base_config, key) is None:
        continue
      # main.py sets a field that may be None (a placeholder) to None; others refuse it.
      out.append(f'--config.{key}=None')
      continue
    out.append(f'--config.{key}={flag_value(value)}')
  return out


def _lookup(config, key):
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def check_fields(config, overrides: Mapping[str, object], run: str):
  """Raises SweepError naming the run and the first field the config lacks."""
  for key in overrides:
    node, path = config, []
    for part in key.split('.'):
      children = list(node.keys()) if hasattr(node, 'keys') else []
      if part not in children:
        where = 'config.' + '.'.join(path) if path else 'config'
        raise SweepError(f'run {run!r}: config.{key} does not exist; {where} has fields '
                         f'{sorted(children)}')
      node, path = node[part], path + [part]


def parse_config(config_file: str, arg: str, extra: list):
  """The config main.py would build from `--config=FILE:ARG` and `extra` flags (its parser)."""
  path = os.path.join(REPO_ROOT, config_file)
  argv = ['main.py', f'--config={path}:{arg}' if arg else f'--config={path}', *extra]
  fv = flags.FlagValues()
  holder = se_flags.define_config_flag('Config file.', flag_values=fv)
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  se_flags.parse(argv, holder, flag_values=fv)  # a ConfigError (a ValueError) names the flag
  return holder.value


# ---------------------------------------------------------------- planning

_CHECKED = {}  # config JSON -> check() outcome: listing a sweep twice traces each model once


def check(config, run: str) -> Optional[str]:
  """Checks a run's config as main.py will (on one device).

  Raises SweepError (naming the run) for a config that is wrong anywhere; returns
  the message for one that is valid but whose model does not fit this data
  set's input (an SE width above a stage's channels, a missing stage, a gather
  extent above a feature map), which the sweep drops.
  """
  key = json.dumps(config_lib.as_json(config), sort_keys=True)
  if key not in _CHECKED:
    try:
      check_lib.check_config(config, num_devices=1, num_processes=1)
      _CHECKED[key] = None
    except check_lib.ModelInputError as e:
      _CHECKED[key] = str(e)
    except ConfigError as e:
      raise SweepError(f'run {run!r}: {e}') from e
  return _CHECKED[key]


def plan(sweep_file: str, root: str, dataset: str = 'imagenet', model: Optional[str] = None,
         extra: Optional[Mapping[str, object]] = None, validate: bool = True) -> Plan:
  """Expands a sweep file on a target into runs, translating or dropping what cannot apply.

  Args:
    sweep_file: path of the sweep file.
    root: the sweep directory; each run's workdir is `root/<run name>`.
    dataset: a key of `targets.TARGETS`.
    model: the SE model to run instead of the target's default.
    extra: overrides for every run (e.g. {'num_epochs': 2}).
    validate: build and check every config (the sweep does; listing tools may skip it).

  Raises:
    SweepError: an unknown target or field, a value the config rejects, two runs
      with the same name; the message names the run.
  """
  module = load_sweep(sweep_file)
  if dataset not in targets.TARGETS:
    raise SweepError(f'--dataset={dataset!r} is unknown; choose one of {sorted(targets.TARGETS)}')
  target = targets.TARGETS[dataset]
  base = module.BASE
  config_file, arg, common = targets.base_for(base, target, model)
  common = {**common, **dict(extra or {})}
  base_config = parse_config(config_file, arg, [])
  check_fields(base_config, common, 'every run')
  _check_extra(module.SWEEP, base, target, model, dict(extra or {}))
  if validate and extra:
    _check_common(config_file, arg, common, dict(extra), base_config)
  runs, dropped, seen = [], [], {}
  for overrides in module.SWEEP:
    overrides = dict(overrides)
    try:
      applied, notes = targets.translate(overrides, base, target, model)
    except targets.Inapplicable as e:
      dropped.append(Dropped(overrides, str(e)))
      continue
    name = run_name(applied)
    if name in seen:
      raise SweepError(f'runs {seen[name]} and {overrides} are both named {name!r}')
    seen[name] = overrides
    fields, run_arg = split_config_args(applied, arg)
    check_fields(base_config, fields, name)
    merged = {**common, **fields}
    args = [
        f'--config={config_file}:{run_arg}' if run_arg else f'--config={config_file}',
        *override_flags(merged, base_config, name)
    ]
    try:
      config = parse_config(config_file, run_arg, args[1:])
    except (flags.Error, ValueError, TypeError) as e:
      raise SweepError(f'run {name!r}: {e}') from e
    if validate:
      reason = check(config, name)
      if reason:
        dropped.append(Dropped(overrides, reason))
        continue
    runs.append(
        Run(name, overrides, applied, args, str(epath.Path(root) / name), config,
            targets.total_steps(config), notes))
  return Plan(sweep=os.path.splitext(os.path.basename(sweep_file))[0],
              sweep_file=os.path.relpath(os.path.abspath(sweep_file),
                                         REPO_ROOT), title=getattr(module, 'TITLE', ''),
              tables=tuple(getattr(module, 'TABLES', ())), axis=getattr(module, 'AXIS', None),
              target=dataset, about=_about(target.about, model, extra), runs=runs, dropped=dropped)


def _check_extra(sweep, base, target, model, extra):
  """Refuses a --set of a field that a run of the sweep sets: the swept value would win."""
  for overrides in sweep:
    try:
      applied, _ = targets.translate(dict(overrides), base, target, model)
    except targets.Inapplicable:
      continue
    for key in sorted(set(extra) & set(applied)):
      raise SweepError(f'--set={key}={flag_value(extra[key])} sets a field the sweep varies: run '
                       f'{run_name(applied)!r} sets config.{key}={flag_value(applied[key])}; '
                       f'drop the --set, or write a sweep file whose runs do not set {key}')


def _check_common(config_file, arg, common, extra, base_config):
  """The --set values with the target's base, by main.py's upfront check.

  Each run's config is checked again with its own fields; this check names the
  --set, so that a value no run can take (a reduction wider than every stage)
  is an error rather than every run dropped as not applicable.
  """
  given = ' '.join(f'--set={k}={flag_value(v)}' for k, v in extra.items())
  without = {k: v for k, v in common.items() if k not in extra}
  try:
    config = parse_config(config_file, arg, override_flags(common, base_config))
  except (flags.Error, ValueError, TypeError) as e:
    raise SweepError(f'{given}: {e}') from e
  try:
    check_lib.check_config(config, num_devices=1, num_processes=1)
  except ConfigError as e:
    try:
      # Only the --set is to blame where the base passes without it.
      check_lib.check_config(parse_config(config_file, arg, override_flags(without, base_config)),
                             num_devices=1, num_processes=1)
    except ConfigError:
      return
    raise SweepError(f'{given}: {e}') from e


def split_config_args(overrides: Mapping[str, object], arg: str):
  """(config field overrides, the config string with the run's `arg.*` keys appended)."""
  fields = {k: v for k, v in overrides.items() if not k.startswith(ARG_PREFIX)}
  extra = [f'{k[len(ARG_PREFIX):]}={v}' for k, v in overrides.items() if k.startswith(ARG_PREFIX)]
  return fields, ','.join(p for p in (arg, *extra) if p)


def _about(about: str, model: Optional[str], extra: Optional[Mapping[str, object]]) -> str:
  """The target's one line, with what --model and --set changed (the epochs it names included)."""
  extra = dict(extra or {})
  if 'num_epochs' in extra:
    about = re.sub(r'\b\d+(\.\d+)? epochs\b', f'{extra["num_epochs"]:g} epochs', about)
  if 'num_train_steps' in extra and int(extra['num_train_steps']) > 0:
    about = re.sub(r'\b\d+(\.\d+)? epochs\b', f'{extra["num_train_steps"]} steps', about)
  if model:
    about += f'; model {model}'
  if extra:
    about += '; set for every run: ' + ', '.join(f'{k}={v}' for k, v in extra.items())
  return about


# ---------------------------------------------------------------- progress on disk


def read_metrics(workdir) -> list:
  """The records of WORKDIR/metrics.jsonl; a half-written last line is ignored."""
  path = epath.Path(workdir) / METRICS_FILE
  try:
    text = path.read_text()
  except Exception:  # pylint: disable=broad-except
    # Missing, or on storage this machine cannot read (a TPU VM's bucket): no progress known.
    return []
  records = []
  for line in text.splitlines():
    try:
      records.append(json.loads(line))
    except ValueError:
      continue
  return records


def checkpoint_steps(workdir) -> list:
  """Steps with a complete checkpoint directory (Orbax renames a save into place when done)."""
  path = epath.Path(workdir) / 'checkpoints'
  try:
    names = [p.name for p in path.iterdir()]
  except Exception:  # pylint: disable=broad-except
    return []
  return sorted(int(n) for n in names if n.isdigit())


def final_eval(records, total_steps) -> Optional[dict]:
  for r in records:
    if r.get('split') == 'eval' and total_steps is not None and r.get('step') == total_steps:
      return r
  return None


def is_finished(workdir, total_steps, manifest_done: bool = False) -> bool:
  """Finished: a checkpoint at the last step, and the last eval logged (or the manifest says done)."""
  if total_steps is None:
    return False
  if total_steps not in checkpoint_steps(workdir):
    return False
  return manifest_done or final_eval(read_metrics(workdir), total_steps) is not None
