"""`--mode=analyze`: the excitation statistics of a trained model (paper section 7.2).

Runs the model over images of the eval split, collects every SE block's gate
and writes to WORKDIR/analysis/:

  stage<k>.png      per block of stage k (counted from 0, as config.model.se.stages
                    counts; the blocks of stage 0 are named layer1_*), the mean
                    gate per channel for each chosen class and for all classes
                    (the paper's Fig. 6)
  distribution.png  the distribution of gate values per block (Fig. 7: the
                    late blocks saturate)
  blocks.csv        per block: channels, mean and std over channels, the
                    fraction of saturated gates, and how much the class moves
                    the gates (class_spread)
  summary.txt       the blocks whose gates hardly depend on the class:
                    candidates for removal (the paper drops the last stage's
                    blocks for ~4% fewer parameters at little cost)
"""

import csv
import io

from absl import logging
from etils import epath
import jax
import numpy as np

from se_flax.analysis import gates as gates_lib
from se_flax.analysis import plots
from se_flax.data import feed
from se_flax.errors import ConfigError
from se_flax.train import parallel


def collect(run, state, classes, num_images):
  """GateStats over the first `num_images` examples of the eval split."""
  stats = gates_lib.GateStats(classes=tuple(classes))
  gate_fn = gates_lib.make_gate_fn(run.model)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  seen = 0
  for batch in feed.eval_batches(run.config.dataset, global_batch_size=run.config.eval_batch_size):
    if seen >= num_images:
      break
    gates = jax.device_get(gate_fn(variables, parallel.global_batch(batch, run.mesh)['image']))
    mask = batch['mask'].copy()
    # Only this many more count; the rest of the batch is masked out like padding.
    real = np.flatnonzero(mask > 0)
    mask[real[max(0, num_images - seen):]] = 0.0
    stats.add(gates, batch['label'], mask)
    seen += int(mask.sum())
  return stats


def write_outputs(stats, out_dir, class_names=None):
  """Writes the CSV, summary and plots; returns the summary text."""
  out_dir = epath.Path(out_dir)  # a local folder or a URL (docs/multihost.md)
  out_dir.mkdir(parents=True, exist_ok=True)
  rows = stats.block_table()
  if not rows:
    raise ConfigError('config.model.name names a network without SE blocks; nothing to '
                      'analyse (use an se_ model)')
  table = io.StringIO(newline='')
  writer = csv.DictWriter(table, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  (out_dir / 'blocks.csv').write_text(table.getvalue())
  flat = gates_lib.constant_blocks(rows)
  lines = [
      f'{len(rows)} SE blocks, {int(stats.counts[-1])} images.',
      'block                     mean    std  saturated  class_spread'
  ]
  for r in rows:
    lines.append(f'{r["block"]:<24}{r["mean"]:>6.3f}{r["std"]:>7.3f}{r["saturated"]:>11.1%}'
                 f'{r["class_spread"]:>14.4f}')
  if flat:
    lines.append('Nearly class-independent gates (class_spread <= 10% of the median block): ' +
                 ', '.join(flat) + '. These blocks act almost as fixed channel scales and are '
                 'candidates for removal (paper section 7.2).')
  else:
    lines.append('No block has class-independent gates.')
  text = '\n'.join(lines)
  (out_dir / 'summary.txt').write_text(text + '\n')
  labels = [class_names[c] if class_names else f'class {c}' for c in stats.classes]
  plots.class_means_per_stage(stats.class_means(), labels, out_dir)
  plots.distribution(stats.samples, out_dir / 'distribution.png')
  return text


def run(config, workdir, step=None, stored=None) -> int:
  """Restores the checkpoint (latest or `step`) in `workdir` and analyses it; `stored`: see
  train/loop.py's trained_state."""
  from se_flax.train import loop  # pylint: disable=g-import-not-at-top
  r, state = loop.trained_state(config, workdir, step, stored)
  config = r.config
  classes = [c for c in config.analysis.classes if 0 <= c < r.info.num_classes]
  if not classes:
    raise ConfigError(f'config.analysis.classes={tuple(config.analysis.classes)} names no class of '
                      f'{config.dataset.name} (0..{r.info.num_classes - 1})')
  stats = collect(r, state, classes, config.analysis.num_images)
  out_dir = epath.Path(workdir) / 'analysis'
  text = write_outputs(stats, out_dir)
  logging.info('analysis written to %s', out_dir)
  if jax.process_index() == 0:
    print(text)
    print(f'Wrote {out_dir}/: stage*.png, distribution.png, blocks.csv, summary.txt')
  return 0
