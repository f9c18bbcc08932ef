"""The table of `--mode=compile` reports: each SE network beside its plain twin, per slice.

Reads the JSON reports `main.py --mode=compile` writes (WORKDIR/compile_<slice>.json)
and prints, per report, the train and eval steps' HBM, FLOPs, modelled time,
images/s, MFU and the share of the compiler's cycle estimates that SE takes;
then, for each SE network whose plain twin (se_flax.models.registry) was
compiled for the same slice, image size and batch, the modelled SE overhead.
Nothing is compiled here: run the compiles first (docs/performance.md).

  .venv/bin/python benchmarks/compile_table.py --reports=/tmp/c/*/compile_*.json \
      --out=benchmarks/results/compile_tpu.md
"""

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import report  # pylint: disable=g-import-not-at-top
from se_flax.models import registry  # pylint: disable=g-import-not-at-top

COLUMNS = ('model', 'recipe', 'slice', 'step', 'images per chip', 'HBM GB per chip',
           'GFLOP per image', 'modelled ms', 'images/s per chip', 'MFU', 'SE share of cycles',
           'all-reduce per step', 'compile s')


def _key(r):
  """What two reports must share to be compared: slice, input and batch."""
  return (r['slice'], tuple(r['image_shape']), r['train']['images_per_chip'], r.get('recipe'))


def _rows(reports):
  rows = []
  for r in reports:
    for step in ('train', 'eval'):
      e = r.get(step)
      if not e:
        continue
      ar = e['collectives_per_device'].get('all-reduce', {'count': 0, 'bytes': 0})
      ms = e.get('modelled_step_seconds')
      share = e.get('cycle_share_percent', {}).get('SE')
      rows.append([
          r['model'],
          r.get('recipe',
                ''), r['slice'], step, e['images_per_chip'], f'{e["hbm_bytes_per_chip"] / 1e9:.2f}',
          f'{e["flops_per_image"] / 1e9:.2f}', f'{ms * 1e3:.2f}' if ms else 'not modelled',
          f'{e["images_per_second_per_chip"]:,.0f}' if ms else '',
          f'{100 * e["mfu"]:.1f}%' if ms else '', '' if share is None else f'{share:.1f}%',
          f'{ar["count"]} x {ar["bytes"] / 1e6:.1f} MB', f'{e["compile_seconds"]:.0f}'
      ])
  return rows


def _overheads(reports):
  by_key = {(r['model'], _key(r)): r for r in reports}
  lines = []
  for (model, key), r in sorted(by_key.items()):
    try:
      plain = by_key.get((registry.plain_twin(model), key))
    except ValueError:
      continue
    if plain is None:
      continue
    parts = []
    for step in ('train', 'eval'):
      t_se, t_plain = (x[step].get('modelled_step_seconds') for x in (r, plain))
      f_se, f_plain = r[step]['flops_per_image'], plain[step]['flops_per_image']
      time = f'{t_se / t_plain:.3f}x in modelled time, ' if t_se and t_plain else ''
      parts.append(f'{step} {time}{f_se / f_plain:.3f}x in FLOPs')
    lines.append(f'- {model} over {plain["model"]} on {key[0]} ({key[3] or "paper"} recipe): ' +
                 '; '.join(parts))
  return lines


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--reports', required=True, nargs='+',
                      help='compile_<slice>.json files (shell patterns are expanded too)')
  parser.add_argument('--recipe', action='append', default=[],
                      help='DIR=NAME: the recipe of the reports under DIR (default: paper)')
  parser.add_argument('--out', default=None, help='also write the markdown here')
  args = parser.parse_args(argv)
  recipes = dict(r.split('=', 1) for r in args.recipe)
  reports = []
  for pattern in args.reports:
    for path in sorted(glob.glob(pattern)) or [pattern]:
      with open(path) as f:
        r = json.load(f)
      r['recipe'] = next((v for k, v in recipes.items() if k in path), 'paper')
      reports.append(r)
  text = report.header(
      'TPU train and eval steps compiled on a CPU host (--mode=compile)',
      'none attached: libtpu compiles for the slices\' compile-only devices',
      ('jax', 'flax', 'optax', 'libtpu'),
      extra=('every figure is the compiler\'s, per chip and step; the time is '
             'XLA\'s model of the chips alone (no input pipeline, no host), not a '
             'measurement',))
  text += '\n' + report.table(COLUMNS, _rows(reports)) + '\n\n' + '\n'.join(_overheads(reports))
  report.emit(text, args.out)


if __name__ == '__main__':
  main()
