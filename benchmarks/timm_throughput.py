"""Training-step speed of timm's models: the PyTorch side of `throughput.py --timm`.

Runs under any interpreter that has torch and timm (jax is not needed; the
two usually live in different environments) and prints one line
`TIMM_JSON {...}` that throughput.py reads. The step is timm's usual recipe:
SGD with momentum, cross-entropy, channels-last tensors, bf16 autocast on a
GPU and float32 on a CPU. Models are timed in interleaved rounds, as on the
jax side, so that a change in machine load hits every model alike.

  .venv-torch/bin/python benchmarks/timm_throughput.py --models=seresnet50,resnet50 \
      --batch=8 --image_size=112 --steps=5 --rounds=3
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position

MARKER = 'TIMM_JSON '


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
      'models': {t.name: {'times': t.times, 'params': t.params, 'macs': t.macs,
                          'peak_bytes': t.peak_bytes or None} for t in trainees},
  }
  print(MARKER + json.dumps(result), flush=True)


if __name__ == '__main__':
  main()
