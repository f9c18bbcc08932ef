"""A stand-in for `python main.py` that writes what a training run leaves in its workdir.

It resumes like the real loop: from the newest checkpoint, dropping metric
lines past it, so tests can check skip and resume without training.
"""

import json
import os
import re


def workdir_of(command):
  return next(a.split('=', 1)[1] for a in command if a.startswith('--workdir='))


def total_of(command, default=110):
  for arg in command:
    m = re.match(r'--config\.num_train_steps=(\d+)', arg)
    if m:
      return int(m.group(1))
  return default


def top1_of(workdir):
  """A made-up final error that differs by run: 2% plus 0.5% per character of the name."""
  return 0.02 + 0.005 * (len(os.path.basename(workdir)) % 7)


def write_records(workdir, records):
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for r in records:
      f.write(json.dumps(r) + '\n')


def read_records(workdir):
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def save_checkpoint(workdir, step, config=None):
  path = os.path.join(workdir, 'checkpoints', str(step))
  os.makedirs(os.path.join(path, 'config'), exist_ok=True)
  if config is not None:
    with open(os.path.join(path, 'config', 'metadata'), 'w') as f:
      json.dump(config, f)


def train(workdir, total, start=0, stop=None, every=2):
  """Appends the metric lines and checkpoints of steps start+1..stop (default: total)."""
  stop = total if stop is None else stop
  os.makedirs(workdir, exist_ok=True)
  records = [r for r in read_records(workdir) if r['step'] <= start]
  final = top1_of(workdir)
  for step in range(start + 1, stop + 1):
    if step % every and step != total:
      continue
    frac = step / total
    records.append({
        'step': step,
        'split': 'train',
        'loss': 2.3 * (1 - 0.8 * frac),
        'top1_error': 0.9 - 0.8 * frac,
        'learning_rate': 0.1 * (1 - frac),
        'images_per_sec': 1000.0 + step
    })
    records.append({
        'step': step,
        'split': 'eval',
        'loss': 2.0 * (1 - 0.8 * frac),
        'top1_error': final + 0.5 * (1 - frac),
        'top5_error': final / 4 + 0.1 * (1 - frac),
        'count': 360.0
    })
    save_checkpoint(workdir, step)
  write_records(workdir, records)


class FakeMain:
  """A runner for experiments.launch_local: records calls; behaviour per run name.

  Attributes:
    calls: (run name, start step) of every call.
    crash_at: {run name: step}: the run stops there with exit code 1 (once).
    preempt_at: {run name: step}: the run stops there with exit code 42 (once).
  """

  def __init__(self, crash_at=None, preempt_at=None):
    self.calls = []
    self.crash_at = dict(crash_at or {})
    self.preempt_at = dict(preempt_at or {})

  def __call__(self, command, cwd, log_path):
    workdir = workdir_of(command)
    name = os.path.basename(workdir)
    total = total_of(command)
    steps = [int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))] if os.path.isdir(
        os.path.join(workdir, 'checkpoints')) else []
    start = max(steps, default=0)
    self.calls.append((name, start))
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, 'a') as f:
      f.write(' '.join(command) + '\n')
    for table, code in ((self.crash_at, 1), (self.preempt_at, 42)):
      if name in table:
        train(workdir, total, start, table.pop(name))
        return code
    train(workdir, total, start)
    return 0
