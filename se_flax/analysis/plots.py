"""Figures of the excitation analysis, in the style of the paper's Figs. 6 and 7."""

import io
import math

from etils import epath

# Figures drawn without pyplot: files only, no display and no global backend to set.
from matplotlib.figure import Figure
import numpy as np


def _by_stage(blocks):
  """{file stem: block names}: 'stage0' for the blocks of module layer1 (config.model.se.stages

  counts from 0, the modules from 1), 'other' for blocks outside the stages."""
  stages = {}
  for name in blocks:
    layer = name.split('_')[0]
    key = (f'stage{int(layer[len("layer"):]) - 1}'
           if layer.startswith('layer') and layer[len('layer'):].isdigit() else 'other')
    stages.setdefault(key, []).append(name)
  return stages


def class_means_per_stage(means, labels, out_dir):
  """One PNG per stage: per block, mean gate per channel for each class and for all (Fig. 6)."""
  paths = []
  for stage, blocks in _by_stage(means).items():
    cols = min(3, len(blocks))
    rows = math.ceil(len(blocks) / cols)
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, block in zip(axes.flat, blocks):
      m = means[block]
      channels = np.arange(m.shape[1])
      for i, label in enumerate(labels):
        ax.plot(channels, m[i], lw=0.8, label=label)
      ax.plot(channels, m[-1], lw=1.2, color='black', ls='--', label='all')
      ax.set_title(block, fontsize=9)
      ax.set_xlabel('channel index', fontsize=8)
      ax.set_ylabel('mean activation', fontsize=8)
      ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(blocks):]:
      ax.axis('off')
    axes.flat[0].legend(fontsize=7)
    title = f'stage {stage[len("stage"):]} (blocks {blocks[0]}..)' if stage != 'other' else stage
    fig.suptitle(f'Excitation per channel, {title}', fontsize=10)
    fig.tight_layout()
    path = epath.Path(out_dir) / f'{stage}.png'
    _save(fig, path)
    paths.append(path)
  return paths


def distribution(samples, path):
  """Violin plot of the gate values of every block (how saturated each block is; Fig. 7)."""
  blocks = list(samples)
  data = [np.concatenate(samples[b], axis=0).ravel() for b in blocks]
  fig = Figure(figsize=(max(6, 0.45 * len(blocks)), 3.6))
  ax = fig.subplots()
  ax.violinplot(data, showmeans=True, showextrema=False, widths=0.8)
  ax.set_xticks(range(1, len(blocks) + 1))
  ax.set_xticklabels(blocks, rotation=70, fontsize=7)
  ax.set_ylabel('gate value')
  ax.set_title('Distribution of excitation per SE block', fontsize=10)
  fig.tight_layout()
  _save(fig, path)
  return path


def _save(fig, path):
  """PNG to `path`, a local file or an object (one whole write)."""
  data = io.BytesIO()
  fig.savefig(data, format='png', dpi=110)
  epath.Path(path).write_bytes(data.getvalue())
