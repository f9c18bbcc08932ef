"""Excitation statistics of a trained SE network (paper section 7.2, Figs. 6 and 7).

The SE blocks sow their gates into the `intermediates` collection; here they
are gathered per block, averaged over positions, and accumulated per class.
"""

import dataclasses

import jax
import numpy as np

from se_flax.errors import check_range
from se_flax.errors import ConfigError


def check_config(analysis_cfg, num_classes: int, dataset: str = 'the data set') -> None:
  """Raises ConfigError for a config.analysis field that --mode=analyze cannot use.

  Each class drawn must be a class index of `dataset` (0..num_classes-1),
  listed once: a class outside it would have no images and NaN statistics.
  """
  classes = analysis_cfg.classes
  span = f'{dataset} (0..{num_classes - 1})'
  if (not isinstance(classes, (tuple, list)) or not classes
      or any(isinstance(c, bool) or not isinstance(c, int) for c in classes)
      or len(set(classes)) != len(classes)):
    raise ConfigError(f'config.analysis.classes={classes!r} must be a non-empty tuple of '
                      f'distinct class indices of {span}')
  outside = [c for c in classes if not 0 <= c < num_classes]
  if outside:
    which = ('names no class of'
             if len(outside) == len(classes) else f'has {outside}, not classes of')
    raise ConfigError(f'config.analysis.classes={tuple(classes)} {which} {span}')
  check_range('analysis.num_images', analysis_cfg.num_images, integer=True, low=1, high=2 ** 31 - 1,
              hint='(all of the eval split if it has fewer)')


def flatten_gates(intermediates) -> dict:
  """{'layer3_1': (N, C) spatially averaged gate, ...} in network order."""
  out = {}

  def visit(tree, path):
    for key, value in tree.items():
      if key == 'gate':
        # sow stores a tuple of every call; one SE block is called once per forward pass.
        g = value[0]
        out['/'.join(path[:-1]) or path[0]] = g.reshape(g.shape[0], -1, g.shape[-1]).mean(axis=1)
      elif isinstance(value, dict) or hasattr(value, 'items'):
        visit(value, path + [key])

  visit(intermediates, [])
  return dict(sorted(out.items(), key=lambda kv: _block_order(kv[0])))


def _block_order(name):
  head = name.split('/')[0]
  if head.startswith('layer') and '_' in head:
    stage, idx = head[len('layer'):].split('_', 1)
    return (int(stage), int(idx), name)
  return (99, 0, name)


def make_gate_fn(model):
  """A jitted function (variables, images) -> {block: (N, C) gates}."""

  @jax.jit
  def fn(variables, images):
    _, state = model.apply(variables, images, train=False, mutable=['intermediates'])
    return flatten_gates(state.get('intermediates', {}))

  return fn


@dataclasses.dataclass
class GateStats:
  """Per block: per-class sums of gates, counts, and samples for histograms."""
  classes: tuple
  sums: dict = dataclasses.field(default_factory=dict)  # block -> (num_classes + 1, C)
  counts: np.ndarray = None  # (num_classes + 1,)
  samples: dict = dataclasses.field(default_factory=dict)  # block -> list of (n, C)
  max_samples: int = 256

  def add(self, gates: dict, labels: np.ndarray, mask: np.ndarray):
    """Adds one batch; row `len(classes)` accumulates every real example (all classes)."""
    keep = mask > 0
    labels = labels[keep]
    k = len(self.classes)
    if self.counts is None:
      self.counts = np.zeros(k + 1, np.int64)
    self.counts[k] += len(labels)
    for i, c in enumerate(self.classes):
      self.counts[i] += int(np.sum(labels == c))
    for block, g in gates.items():
      g = np.asarray(g, np.float64)[keep]
      acc = self.sums.setdefault(block, np.zeros((k + 1, g.shape[-1])))
      acc[k] += g.sum(axis=0)
      for i, c in enumerate(self.classes):
        acc[i] += g[labels == c].sum(axis=0)
      taken = sum(len(s) for s in self.samples.get(block, []))
      if taken < self.max_samples:
        self.samples.setdefault(block, []).append(g[:self.max_samples - taken])

  def class_means(self) -> dict:
    """block -> (num_classes + 1, C): mean gate per channel for each class, then for all."""
    denom = np.maximum(self.counts, 1)[:, None]
    return {b: s / denom for b, s in self.sums.items()}

  def block_table(self) -> list:
    """One row per block: mean and std over channels, saturation, and class dependence."""
    rows = []
    for block, means in self.class_means().items():
      overall = means[-1]
      values = np.concatenate(self.samples[block], axis=0)
      per_class = means[:-1][self.counts[:-1] > 0]
      # How much the class changes a channel's mean gate: near zero means the block is class-agnostic.
      spread = float(np.mean(np.std(per_class, axis=0))) if len(per_class) > 1 else float('nan')
      rows.append(
          dict(block=block, channels=overall.shape[0], mean=float(overall.mean()),
               std=float(overall.std()), sample_std=float(values.std()),
               saturated=float(np.mean((values > 0.99) | (values < 0.01))), class_spread=spread))
    return rows


def constant_blocks(rows, rel_threshold=0.1):
  """Blocks whose class spread is below `rel_threshold` of the median block's spread."""
  spreads = np.array([r['class_spread'] for r in rows], float)
  finite = spreads[np.isfinite(spreads)]
  if not len(finite):
    return []
  reference = float(np.median(finite))
  return [
      r['block']
      for r in rows
      if np.isfinite(r['class_spread']) and r['class_spread'] <= rel_threshold * reference
  ]
