"""Training-step speed of timm's models: the PyTorch side of `throughput.py --timm`.

Run as a script, it needs torch and timm but not jax (the two usually live in
different environments) and prints one line `TIMM_JSON {...}`. throughput.py
starts it with `launch` and compares with `comparison_table`; those two need
only the standard library.

The step is timm's usual recipe: SGD with momentum, cross-entropy,
channels-last tensors, bf16 autocast on a GPU and float32 on a CPU, eager
unless `--compile`. Models are timed in interleaved rounds, as on the jax
side, so that a change in machine load hits every model alike.

  .venv-torch/bin/python benchmarks/timm_throughput.py --models=seresnet50,resnet50 \
      --batch=8 --image_size=112 --steps=5 --rounds=3
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position

MARKER = 'TIMM_JSON '

# ---------------------------------------------------------------- called by throughput.py


def timm_name(name: str) -> str:
  """timm's counterpart: se_resnet50 -> seresnet50, se_resnext50_32x4d -> seresnext50_32x4d."""
  return 'legacy_senet154' if name == 'senet154' else name.replace('se_', 'se', 1)


def default_torch_python():
  """The current interpreter if it has torch and timm, else None."""
  if importlib.util.find_spec('torch') and importlib.util.find_spec('timm'):
    return sys.executable
  return None


def launch(args, models, batch):
  """Runs this script under `args.torch_python`; returns its JSON, or None having said why."""
  python = args.torch_python or default_torch_python()
  if not python:
    print('--timm: this interpreter lacks torch or timm; pass --torch_python=PATH', file=sys.stderr)
    return None
  cmd = [
      python,
      os.path.abspath(__file__), '--models=' + ','.join(timm_name(m) for m in models),
      f'--batch={batch}', f'--image_size={args.image_size}', f'--steps={args.steps}',
      f'--warmup={args.warmup}', f'--rounds={args.rounds}'
  ]
  if args.timm_compile:
    cmd.append('--compile')
  print('running', ' '.join(cmd), flush=True)
  proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
  for line in proc.stdout.splitlines():
    if line.startswith(MARKER):
      return json.loads(line[len(MARKER):])
  print(f'timm run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}', file=sys.stderr)
  return None


def _gb(nbytes):
  return '-' if not nbytes else f'{nbytes / 2**30:.2f}'


def comparison_table(benches, timm):
  """Ours against timm's per model, per device; `timm` maps batch -> launch()'s result."""
  rows = []
  for b in benches:
    res = timm.get(b.per_device_batch)
    entry = res and res['models'].get(timm_name(b.name))
    if not entry:
      continue
    ours = report.median_iqr(b.train_times)[0]
    theirs, theirs_iqr = report.median_iqr(entry['times'])
    ours_rate = b.per_device_batch / ours  # per device: timm runs on one
    theirs_rate = b.per_device_batch / theirs
    best_ratio = min(entry['times']) / min(b.train_times)
    rows.append([
        b.name,
        timm_name(b.name), f'{b.macs / 1e9:.3f} / {entry["macs"] / 1e9:.3f}' if b.macs else '-',
        b.per_device_batch, f'{ours_rate:,.1f}', f'{theirs_rate:,.1f}',
        report.ms(theirs, theirs_iqr),
        report.ms(min(entry['times'])),
        _gb(entry.get('peak_bytes')), f'{ours_rate / theirs_rate:.2f}', f'{best_ratio:.2f}'
    ])
  return report.table([
      'model', 'timm model', 'GMACs/img ours / timm', 'batch', 'ours img/s/device', 'timm img/s',
      'timm ms/step (IQR)', 'timm best ms', 'timm peak GiB', 'ours / timm (medians)',
      'ours / timm (bests)'
  ], rows)


# ---------------------------------------------------------------- run as a script


def _args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--models', default='seresnet50,resnet50', help='timm names, comma separated')
  p.add_argument('--batch', type=int, default=8, help='images per step (one device)')
  p.add_argument('--image_size', type=int, default=224)
  p.add_argument('--steps', type=int, default=5, help='timed steps per model per round')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps per model before round 1')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--amp', default='auto', choices=('auto', 'bf16', 'none'),
                 help='auto: bf16 autocast on CUDA, float32 on CPU')
  p.add_argument('--compile', action='store_true', help='torch.compile the model (slow start)')
  p.add_argument('--device', default='auto', choices=('auto', 'cuda', 'cpu'))
  return p.parse_args(argv)


def _macs(model, image_size, device):
  """Forward multiply-accumulates of one image, counted by torch's own FLOP counter."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top
  model.eval()
  counter = FlopCounterMode(display=False)
  with torch.no_grad(), counter:
    model(torch.zeros(1, 3, image_size, image_size, device=device))
  model.train()
  return counter.get_total_flops() // 2


class _Trainee:
  """One timm model with its optimizer and a fixed synthetic batch on the device."""

  def __init__(self, name, args, device, amp_dtype):
    import timm  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    self.name = name
    self.torch = torch
    self.device = device
    self.amp_dtype = amp_dtype
    model = timm.create_model(name, num_classes=1000).to(device)
    model = model.to(memory_format=torch.channels_last)
    self.params = sum(p.numel() for p in model.parameters())
    self.macs = _macs(model, args.image_size, device)
    self.model = torch.compile(model) if args.compile else model
    self.opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    self.loss_fn = torch.nn.CrossEntropyLoss()
    shape = (args.batch, 3, args.image_size, args.image_size)
    self.x = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)
    self.y = torch.randint(0, 1000, (args.batch,), device=device)
    self.times = []
    self.peak_bytes = 0

  def sync(self):
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize()

  def step(self):
    torch = self.torch
    with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                        enabled=self.amp_dtype is not None):
      loss = self.loss_fn(self.model(self.x), self.y)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()

  def run(self, steps, timed):
    cuda = self.device.type == 'cuda'
    if cuda:
      self.torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
      start = time.perf_counter()
      self.step()
      self.sync()
      if timed:
        self.times.append(time.perf_counter() - start)
    if cuda:
      self.peak_bytes = max(self.peak_bytes, self.torch.cuda.max_memory_allocated())


def main(argv=None):
  args = _args(argv)
  import torch  # pylint: disable=g-import-not-at-top
  if args.device == 'auto':
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  else:
    device = torch.device(args.device)
  amp = args.amp if args.amp != 'auto' else ('bf16' if device.type == 'cuda' else 'none')
  amp_dtype = torch.bfloat16 if amp == 'bf16' else None
  if device.type == 'cuda':
    # Lets cuDNN pick its fastest kernels for these fixed shapes, as timm's train.py does.
    torch.backends.cudnn.benchmark = True
    device_name = torch.cuda.get_device_name(device)
  else:
    device_name = f'CPU ({report.cpu_model()}), {torch.get_num_threads()} torch threads'

  trainees = [_Trainee(name, args, device, amp_dtype) for name in args.models.split(',') if name]
  for t in trainees:
    t.run(args.warmup, timed=False)
  for _ in range(args.rounds):
    for t in trainees:
      t.run(args.steps, timed=True)

  result = {
      'device': device_name,
      'versions': report.package_versions(['torch', 'torchvision', 'timm']),
      'python': sys.version.split()[0],
      'amp': amp,
      'compiled': args.compile,
      'channels_last': True,
      'models': {
          t.name: {
              'times': t.times,
              'params': t.params,
              'macs': t.macs,
              'peak_bytes': t.peak_bytes or None
          } for t in trainees
      },
  }
  print(MARKER + json.dumps(result), flush=True)


if __name__ == '__main__':
  main()
