"""Tables and plots of finished (and unfinished) sweeps, beside the paper's numbers.

  python -m experiments.report DIR

DIR is a sweep directory (with manifest.json) or a directory of them; a
directory of run workdirs without a manifest is read too, with each run's
config from its newest checkpoint. Writes DIR/report.md and PNGs beside it:
for every sweep a table (setting, parameters, GMACs, final and best error,
training images/s, the paper's row), training curves, and error and size
against the setting (a bar chart when the setting is not a number).
"""

import dataclasses
import datetime
import json
import statistics
import sys
from typing import Optional

from etils import epath

from experiments import manifest as manifest_lib
from experiments import paper as paper_lib
from experiments import paper_tables23
from experiments import plots
from experiments import rsb_reference
from experiments import runs as runs_lib
from experiments import targets
from se_flax import check
from se_flax import config_lib
from se_flax import errors
from se_flax import models
from se_flax import paths
from se_flax.data import datasets
from se_flax.errors import ConfigError
from se_flax.models import summary

REPORT_FILE = 'report.md'


@dataclasses.dataclass
class RunResult:
  name: str
  label: str
  overrides: dict
  status: str
  records: list
  config: Optional[dict] = None
  total_steps: Optional[int] = None
  params: Optional[int] = None
  macs: Optional[int] = None
  top1: Optional[float] = None  # latest eval, in %
  top5: Optional[float] = None
  best_top1: Optional[float] = None
  images_per_sec: Optional[float] = None
  paper: Optional[paper_lib.Row] = None
  done: bool = False


@dataclasses.dataclass
class SweepResult:
  name: str
  title: str
  tables: tuple
  axis: Optional[str]
  dataset: str
  about: str
  runs: list
  dropped: list
  command: str = ''
  parallel: int = 1


# ---------------------------------------------------------------- reading


def paper_row(overrides, tables):
  """The published row for a run: recipes (RSB), Tables 2/3 (architectures) or Tables 10-16."""
  if tables and set(tables) == set(rsb_reference.TABLES):
    return rsb_reference.find(overrides, tables)
  if tables and set(tables) <= set(paper_tables23.TABLES):
    return paper_tables23.find(overrides, tables)
  return paper_lib.find(overrides, tables)


def checkpoint_config(workdir) -> Optional[dict]:
  """The config saved with the newest checkpoint (Orbax's JSON item `config`)."""
  for step in reversed(runs_lib.checkpoint_steps(workdir)):
    path = epath.Path(workdir) / 'checkpoints' / str(step) / 'config' / 'metadata'
    try:
      return json.loads(path.read_text())
    except (OSError, ValueError):
      continue
  return None


def _status(entry, records, total, final) -> str:
  last = max((r.get('step', 0) for r in records), default=None)
  where = f' at step {last}' + (f'/{total}' if total else '') if last is not None else ''
  if final is not None or (entry.get('status') == 'done' and total is None):
    return 'done'
  if entry.get('status') == 'failed':
    return f'failed (exit {entry.get("exit_code")}){where}'
  if records:
    return f'in progress{where}'
  return entry.get('status') or 'pending'


def _throughput(records) -> Optional[float]:
  # The first interval includes compilation, and intervals that contain an
  # evaluation are slower; the median of the rest is the steady rate.
  rates = [
      r['images_per_sec'] for r in records if r.get('split') == 'train' and 'images_per_sec' in r
  ]
  rates = rates[1:] if len(rates) > 1 else rates
  return statistics.median(rates) if rates else None


def read_run(entry: dict) -> RunResult:
  """One run's results from its workdir, given its manifest entry (or a stand-in)."""
  workdir = entry['workdir']
  records = runs_lib.read_metrics(workdir)
  config = entry.get('config') or checkpoint_config(workdir)
  total = entry.get('total_steps')
  if total is None and config:
    total = targets.total_steps(_config_dict(config))
  final = runs_lib.final_eval(records, total)
  evals = [r for r in records if r.get('split') == 'eval' and 'top1_error' in r]
  latest = final or (evals[-1] if evals else None)
  result = RunResult(name=entry['name'],
                     label=runs_lib.label(entry.get('applied', entry.get('overrides', {}))),
                     overrides=entry.get('overrides',
                                         {}), status=_status(entry, records, total,
                                                             final), records=records, config=config,
                     total_steps=total, images_per_sec=_throughput(records))
  result.done = result.status == 'done'
  if latest:
    result.top1, result.top5 = 100 * latest['top1_error'], 100 * latest['top5_error']
    result.best_top1 = 100 * min(r['top1_error'] for r in evals)
  return result


def _config_dict(config: dict):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(config)


_COSTS = {}


def model_cost(config: dict):
  """(parameters, MACs) of the run's model on its data set's input, traced without compiling."""
  cfg = _config_dict(config)
  try:
    num_classes = datasets.get(cfg.dataset.name).num_classes
    shape = check.input_shape(cfg)
  except ConfigError:
    return None, None
  key = json.dumps([config['model'], config.get('init_from'), shape, num_classes], sort_keys=True)
  if key not in _COSTS:
    try:
      cost = summary.summarize(models.from_config(cfg, num_classes), shape)
      _COSTS[key] = cost.params, cost.macs
    except (ValueError, KeyError, TypeError) as e:
      print(f'warning: no size for {config["model"].get("name")}: {e}', file=sys.stderr)
      _COSTS[key] = (None, None)
  return _COSTS[key]


def _varied(configs: list) -> list:
  """Per config, the flattened fields whose values differ across `configs`."""
  flats = [{
      k: tuple(v) if isinstance(v, list) else v for k, v in config_lib.flatten(c or {}).items()
  } for c in configs]
  keys = sorted({k for f in flats for k in f})
  differ = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]
  return [{k: f.get(k) for k in differ} for f in flats]


def read_sweep(directory: str) -> Optional[SweepResult]:
  """A sweep from DIR/manifest.json, or from the run workdirs in DIR."""
  data = manifest_lib.Manifest.load(directory)
  if data is None:
    workdirs = sorted(
        d.name for d in epath.Path(directory).iterdir() if (d / runs_lib.METRICS_FILE).is_file())
    if not workdirs:
      return None
    entries = [{'name': d, 'workdir': str(epath.Path(directory) / d)} for d in workdirs]
    configs = [checkpoint_config(e['workdir']) for e in entries]
    for entry, varied in zip(entries, _varied(configs)):
      entry['overrides'] = varied
    dataset = (configs[0] or {}).get('dataset', {}).get('name', '?')
    data = {
        'sweep': paths.resolve(directory).name,
        'title': '',
        'tables': None,
        'axis': None,
        'dataset': dataset,
        'about': 'runs without a manifest',
        'runs': entries
    }
  runs = [read_run(e) for e in data['runs']]
  tables = tuple(data['tables']) if data.get('tables') is not None else None
  for run in runs:
    run.paper = paper_row(run.overrides, tables)
    if run.config:
      run.params, run.macs = model_cost(run.config)
  command = data['runs'][0].get('command', '') if data['runs'] else ''
  return SweepResult(data['sweep'],
                     data.get('title') or data['sweep'], tables or (), data.get('axis'),
                     data.get('dataset', '?'), data.get('about', ''), runs, data.get('dropped', []),
                     command,
                     data.get('parallel') or 1)


def find_sweeps(directory: str) -> list:
  if (epath.Path(directory) / manifest_lib.MANIFEST_FILE).is_file():
    return [directory]
  subdirs = sorted(str(d) for d in epath.Path(directory).iterdir())
  found = [d for d in subdirs if (epath.Path(d) / manifest_lib.MANIFEST_FILE).is_file()]
  return found or [directory]


# ---------------------------------------------------------------- writing


def _num(value, fmt):
  return '' if value is None else format(value, fmt)


def _paper_cells(row: Optional[paper_lib.Row]) -> list:
  if row is None:
    return ['', '', '', '']
  params = f'{row.params_m}M' if row.params_m else ''
  return [f'{row.table}: {row.label}', _num(row.top1, '.2f'), _num(row.top5, '.2f'), params]


def table(sweep: SweepResult) -> str:
  head = [
      'setting', 'status', 'params', 'GMACs', 'top-1 err %', 'top-5 err %', 'best top-1 %',
      'train img/s', 'paper', 'paper top-1', 'paper top-5', 'paper params'
  ]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for run in sweep.runs:
    cells = [
        run.label, run.status,
        _num(run.params, ','),
        _num(run.macs and run.macs / 1e9, '#.4g'),
        _num(run.top1, '.2f'),
        _num(run.top5, '.2f'),
        _num(run.best_top1, '.2f'),
        _num(run.images_per_sec, ',.0f')
    ] + _paper_cells(run.paper)
    lines.append('| ' + ' | '.join(cells) + ' |')
  for d in sweep.dropped:
    row = paper_row(d['overrides'], sweep.tables or None)
    cells = [runs_lib.label(d['overrides']), f'not run on {sweep.dataset}'] + [''] * 6
    lines.append('| ' + ' | '.join(cells + _paper_cells(row)) + ' |')
  return '\n'.join(lines)


def _png(out_dir: str, name: str):
  """A binary file for out_dir/name, a local folder or a URL (an object is written on close)."""
  return (epath.Path(out_dir) / name).open('wb')


def _plots(sweep: SweepResult, out_dir: str, prefix: str) -> list:
  """Writes the sweep's PNGs as PREFIX_<kind>.png; returns (caption, file name) pairs."""
  written = []
  name = f'{prefix}_curves.png'
  with _png(out_dir, name) as f:
    plots.curves(sweep.runs, sweep.title, f)
  written.append(('training curves', name))
  done = [r for r in sweep.runs if r.top1 is not None]
  axis = sweep.axis
  numeric = axis and all(
      isinstance(r.overrides.get(axis), (int, float)) for r in sweep.runs if axis in r.overrides)
  plain = [r for r in sweep.runs if r.paper is paper_lib.BASELINE]
  rows = [r for r in paper_lib.ROWS if r.table in sweep.tables]
  if numeric:
    short = axis[len('model.'):] if axis.startswith('model.') else axis
    ours = [(r.overrides[axis], r.top1) for r in done if axis in r.overrides and r.done]
    theirs = [(row.overrides[axis], row.top1) for row in rows if axis in row.overrides]
    base = plain[0].top1 if plain and plain[0].done else None
    name = f'{prefix}_error.png'
    with _png(out_dir, name) as f:
      plots.versus(ours, theirs, base, paper_lib.BASELINE.top1, short, 'top-1 error (%)',
                   f'{sweep.title}: top-1 error', f, sweep.dataset)
    written.append((f'top-1 error against {short}', name))
    ours = [
        (r.overrides[axis], r.params / 1e6) for r in sweep.runs if axis in r.overrides and r.params
    ]
    theirs = [(row.overrides[axis], row.params_m)
              for row in rows
              if axis in row.overrides and row.params_m]
    base = plain[0].params / 1e6 if plain and plain[0].params else None
    name = f'{prefix}_params.png'
    with _png(out_dir, name) as f:
      plots.versus(ours, theirs, base, paper_lib.BASELINE.params_m, short, 'parameters (M)',
                   f'{sweep.title}: parameters', f, sweep.dataset)
    written.append((f'parameters against {short}', name))
  else:
    matched = [r.paper for r in sweep.runs if r.paper is not None]
    name = f'{prefix}_bars.png'
    # The swept field is in the title; each bar keeps only its value (and any other field).
    prefix = (axis[len('model.'):] if axis and axis.startswith('model.') else axis or '') + '='
    labels = [r.label.replace(prefix, '') if axis else r.label for r in sweep.runs]
    with _png(out_dir, name) as f:
      plots.bars(labels, [r.top1 if r.done else None for r in sweep.runs],
                 [f'{m.label}' for m in matched], [m.top1 for m in matched], 'top-1 error (%)',
                 f'{sweep.title}: final top-1 error', f, sweep.dataset)
    written.append(('final top-1 error', name))
  return written


def section(sweep: SweepResult, out_dir: str, prefix: Optional[str] = None) -> str:
  """The sweep's heading, table, notes and (unless prefix is None) plots."""
  tables = ', '.join(sweep.tables)
  lines = [
      f'## {sweep.title} on {sweep.dataset} (`{sweep.name}`' +
      (f', paper {tables})' if tables else ')'), '',
      f'Data set: **{sweep.dataset}** ({sweep.about}).' +
      (f' Runs shared the machine {sweep.parallel} at a time, which lowers img/s.'
       if sweep.parallel > 1 else '')
  ]
  if sweep.command:
    lines += ['', f'First run\'s command: `{sweep.command}`']
  lines += ['', table(sweep), '']
  unfinished = [r for r in sweep.runs if not r.done]
  if unfinished:
    lines += [
        f'Not finished: {", ".join(f"`{r.name}` ({r.status})" for r in unfinished)}; their '
        'errors are from their latest evaluation.', ''
    ]
  for d in sweep.dropped:
    lines.append(f'- not run: {runs_lib.label(d["overrides"])}: {d["reason"]}')
  if sweep.dropped:
    lines.append('')
  if prefix is not None:
    for caption, name in _plots(sweep, out_dir, prefix):
      lines.append(f'![{sweep.title}: {caption}]({name})')
    lines.append('')
  return '\n'.join(lines)


def _sources(sweeps) -> str:
  """Where the published columns of these sweeps come from, each source once."""
  out = []
  for sweep in sweeps:
    tables = set(sweep.tables or ())
    if tables and tables == set(rsb_reference.TABLES):
      source = rsb_reference.SOURCE
    elif tables and tables <= set(paper_tables23.TABLES):
      source = f'{paper_tables23.SOURCE}; {paper_tables23.SETTING}'
    else:
      source = f'{paper_lib.SOURCE}; {paper_lib.SETTING}'
    if source not in out:
      out.append(source)
  return ' / '.join(out)


def write_report(directory: str, with_plots: bool = True) -> str:
  """Reads every sweep under `directory`; writes DIR/report.md (and PNGs); returns its path."""
  sweeps = [(read_sweep(d), d) for d in find_sweeps(directory)]
  sweeps = [(s, d) for s, d in sweeps if s is not None]
  if not sweeps:
    raise FileNotFoundError(
        f'no sweep manifest or run with {runs_lib.METRICS_FILE} under {directory}')
  stamp = datetime.datetime.now().strftime('%Y-%m-%d %H:%M')
  parts = [
      '# SE ablation sweeps', '',
      f'Written by `python -m experiments.report` on {stamp}. Errors are in %: "top-1/top-5" at '
      'the last evaluation, "best" the lowest top-1 of any evaluation; "train img/s" is the '
      'median training throughput. Parameters and GMACs (multiply-accumulates of one forward '
      'pass) are counted on the data set\'s input.', '',
      f'Paper columns: {_sources(s for s, _ in sweeps)}. On another data set or network they '
      'are a reference for the trend across settings, not for the values.', ''
  ]
  used = set()
  for sweep, sweep_dir in sweeps:
    # Two sweeps of one file (say on digits and on CIFAR) must not overwrite each other's plots.
    prefix = f'{sweep.name}_{sweep.dataset}'
    if prefix in used:
      prefix = f'{prefix}_{epath.Path(sweep_dir).name}'
    used.add(prefix)
    parts.append(section(sweep, directory, prefix if with_plots else None))
  path = epath.Path(directory) / REPORT_FILE
  path.write_text('\n'.join(parts))
  return str(path)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1 or argv[0].startswith('-'):
    print(f'error: usage: {__doc__.split(chr(10) * 2)[1].strip()} (got {argv})', file=sys.stderr)
    return errors.EXIT_CONFIG_ERROR
  directory = argv[0]
  try:
    if not paths.is_url(directory) and not epath.Path(directory).is_dir():
      what = 'a file' if epath.Path(directory).exists() else 'missing'
      raise FileNotFoundError(f'{directory} is {what}; give a sweep directory (its --root) or a '
                              'directory of them')
    path = write_report(directory)
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    return errors.EXIT_CONFIG_ERROR
  except manifest_lib.ManifestDamagedError as e:
    print(f'error: {e}; re-run the sweep command to rebuild it from the runs\' workdirs',
          file=sys.stderr)
    return errors.EXIT_CONFIG_ERROR
  except OSError as e:
    where = f' {e.filename}' if e.filename else ''
    print(f'error: cannot write{where}: {e.strerror or e}; free space or fix the permissions',
          file=sys.stderr)
    return errors.EXIT_WRITE_ERROR
  except KeyboardInterrupt:
    print('error: interrupted; the report was not written', file=sys.stderr)
    return errors.EXIT_INTERRUPTED
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
