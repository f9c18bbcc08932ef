"""The report's figures: training curves, error and size against a numeric setting, bar charts.

Ours and the paper's numbers sit in side-by-side panels rather than on one
axis: the paper's are ImageNet SE-ResNet-50 errors, ours may come from a
network and data set whose error is an order of magnitude lower, so only the
shapes of the two are comparable.
"""

import matplotlib

matplotlib.use('Agg')  # files only; no display is assumed
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import matplotlib.ticker  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top


def _save(fig, path):
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def curves(runs, title, path):
  """Training loss and eval top-1 error against step, one line per run."""
  fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(12, 4.5))
  for run in runs:
    train = [r for r in run.records if r.get('split') == 'train' and 'loss' in r]
    evals = [r for r in run.records if r.get('split') == 'eval' and 'top1_error' in r]
    if not train and not evals:
      continue
    line = ax_loss.plot([r['step'] for r in train], [r['loss'] for r in train], label=run.label)[0]
    ax_err.plot([r['step'] for r in evals], [100 * r['top1_error'] for r in evals], marker='o',
                markersize=3, color=line.get_color(), label=run.label)
  ax_loss.set(xlabel='step', ylabel='training loss', title=f'{title}: training loss')
  ax_err.set(xlabel='step', ylabel='eval top-1 error (%)', title=f'{title}: eval top-1 error')
  ax_err.set_yscale('log')
  # Labels at 1-2-5 steps: errors span from tens of percent down to a few.
  ax_err.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
  ax_err.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter('%g'))
  ax_err.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  for ax in (ax_loss, ax_err):
    ax.grid(alpha=0.3)
  ax_err.legend(fontsize=7, loc='upper right')
  _save(fig, path)


def _baseline(ax, value, label):
  if value is not None:
    ax.axhline(value, color='gray', linestyle='--', linewidth=1, label=label)


def versus(points, paper_points, baseline, paper_baseline, axis_name, ylabel, title, path, dataset):
  """Ours (left) and the paper's (right) values against a numeric setting (log2 x axis).

  Args:
    points / paper_points: [(x, y)]; baseline / paper_baseline: the plain network's y or None.
  """
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  panels = ((axes[0], points, baseline, f'ours ({dataset})', 'tab:blue'),
            (axes[1], paper_points, paper_baseline, 'paper (ImageNet, SE-ResNet-50)', 'tab:red'))
  for ax, pts, base, name, color in panels:
    pts = sorted(pts)
    if pts:
      ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', color=color, label='SE')
      ax.set_xscale('log', base=2)
      ax.set_xticks([p[0] for p in pts], [str(p[0]) for p in pts])
    _baseline(ax, base, 'no SE')
    ax.set(xlabel=axis_name, ylabel=ylabel, title=name)
    ax.grid(alpha=0.3)
    if pts or base is not None:
      ax.legend(fontsize=8)
  fig.suptitle(title)
  _save(fig, path)


def bars(labels, ours, paper_labels, paper_values, ylabel, title, path, dataset):
  """Bar charts of one metric per setting: ours (left; None = no result yet) and the paper's."""
  widths = [max(len(labels), 1), max(len(paper_labels), 1)]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={'width_ratios': widths})
  x = np.arange(len(labels))
  values = [v if v is not None else 0.0 for v in ours]
  bars_ = axes[0].bar(x, values, color='tab:blue')
  for bar, v in zip(bars_, ours):
    axes[0].annotate('n/a' if v is None else f'{v:.2f}',
                     (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha='center',
                     va='bottom', fontsize=7)
  axes[0].set_xticks(x, labels, rotation=30, ha='right', fontsize=8)
  axes[0].set(ylabel=ylabel, title=f'ours ({dataset})')
  x = np.arange(len(paper_labels))
  bars_ = axes[1].bar(x, paper_values, color='tab:red')
  for bar, v in zip(bars_, paper_values):
    axes[1].annotate(f'{v:.2f}', (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha='center',
                     va='bottom', fontsize=7)
  axes[1].set_xticks(x, paper_labels, rotation=30, ha='right', fontsize=8)
  axes[1].set(ylabel=ylabel, title='paper (ImageNet, SE-ResNet-50)')
  if paper_values:
    low = min(paper_values)
    # The paper's differences are tenths of a point: a zero-based axis would hide them.
    axes[1].set_ylim(low - 1.0, max(paper_values) + 0.5)
  for ax in axes:
    ax.grid(axis='y', alpha=0.3)
  fig.suptitle(title)
  _save(fig, path)
