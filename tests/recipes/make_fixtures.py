"""Writes tests/recipes/fixtures/: what timm computes for the "ResNet strikes back" recipes.

Needs torch and timm, which the project's own environment does not have:

    python3 -m venv .venv-torch
    .venv-torch/bin/pip install -r requirements-torch.txt
    .venv-torch/bin/python tests/recipes/make_fixtures.py

The recipe values come from configs/recipes.py (plain Python, imported by
path), and timm gets exactly the arguments RSB's command lines gave it: the
optimizer's name, rate and weight decay, the schedule's length and warm-up,
the Mixup/CutMix alphas and the loss's threshold. Everything those command
lines left unsaid stays timm's default, so a recipe value that differs from
what timm used shows up as a test failure, not as an agreement with ourselves.
Three schedule defaults moved in timm after RSB was trained; for those the
script states the value of timm 0.4.12 / 0.5 (autumn 2021), the releases RSB
ran (PERIOD_DEFAULTS), rather than reading ours.

Files (each small; the tests in this folder read them without torch):
    optim_<case>.json / .npy   params, gradients and params after each of a few
                               steps of timm's optimizer factory (create_optimizer_v2)
    crop_<H>x<W>.npy           windows (top, left, height, width) of timm's
                               RandomResizedCrop sampler, many seeded draws
    schedule.json              timm's cosine schedule per epoch for each recipe
    mix.json / mix_<case>.npy  timm's Mixup in batch mode: its draw, box, mixed
                               images and targets, and its BCE loss on them
"""

import json
import os
import random
import sys

import numpy as np
import PIL.Image
import timm
from timm.data import mixup as timm_mixup
from timm.data import transforms as timm_transforms
from timm.loss import BinaryCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, 'fixtures')
sys.path.insert(0, os.path.join(ROOT, 'configs'))
import recipes  # noqa: E402  (configs/recipes.py, plain Python: no jax in this environment)

# train.py defaults of the timm releases RSB was trained with that later releases changed
# (today: warmup_lr 1e-5, min_lr 0, cooldown_epochs 0). RSB's command lines set none of them.
PERIOD_DEFAULTS = dict(warmup_lr=1e-4, min_lr=1e-6, cooldown_epochs=10)

# The optimizer cases: parameters shaped like a conv kernel, a BN layer and a classifier, and
# gradient scales that make one setting visible at a time.
OPTIM_CASES = (
    # Norms of 30-60: timm's Lamb scales the gradient to a global norm of 1 before its moments.
    dict(name='lamb_large_gradients', recipe='rsb_a1', opt=None, grad_scale=3.0, seed=1),
    # Elements near 1e-6, global norm far below 1: only eps tells 1e-6 from 1e-8 here.
    dict(name='lamb_small_gradients', recipe='rsb_a3', opt=None, grad_scale=1e-6, seed=2),
    # AdamW (torch.optim.AdamW through the factory) with the recipe's eps, betas and clipping.
    dict(name='adamw_recipe_settings', recipe='rsb_a2', opt='adamw', grad_scale=3.0, seed=3),
)
OPTIM_STEPS = 3
# The recipe's schedule.name -> timm's --sched (RSB Table 1: cosine).
TIMM_SCHEDULES = {'cosine': 'cosine', 'timm_cosine': 'cosine'}

CROP_SHAPES = ((375, 500), (60, 400))  # (height, width); the strip makes most draws fail
CROP_DRAWS = 3000
CROP_SEED = 0

MIX_RECIPE = 'rsb_a1'  # label smoothing 0.1, Mixup 0.2, CutMix 1.0
MIX_BATCH, MIX_CLASSES, MIX_SHAPE = 8, 10, (3, 9, 11)  # odd sides give odd CutMix boxes
# (name, seed, which draw to force, processes): every case mixes MIX_BATCH images in total.
MIX_CASES = (
    ('mixup_a', 10, 'mixup', 1),
    ('mixup_b', 11, 'mixup', 1),
    ('cutmix_a', 12, 'cutmix', 1),
    ('cutmix_b', 17, 'cutmix', 1),
    ('cutmix_c', 37, 'cutmix', 1),
    ('per_process', 49, None, 2),
)


class TinyNet(torch.nn.Module):
  """A conv kernel, a BN layer and a classifier: 4-D and 2-D weights, and 1-D params."""

  def __init__(self):
    super().__init__()
    self.conv = torch.nn.Conv2d(3, 8, 3, bias=False)
    self.bn = torch.nn.BatchNorm2d(8)
    self.fc = torch.nn.Linear(8, 5)


def recipe_fields(name):
  return recipes.RSB[name]['fields']


def write_optim(case):
  recipe, fields = recipes.RSB[case['recipe']], recipe_fields(case['recipe'])
  rng = np.random.default_rng(case['seed'])
  model = TinyNet()
  names = [n for n, _ in model.named_parameters()]
  with torch.no_grad():
    for _, p in model.named_parameters():
      p.copy_(torch.from_numpy(rng.normal(size=p.shape).astype(np.float32)))
  grads = [[(rng.normal(size=p.shape) * case['grad_scale']).astype(np.float32)
            for p in model.parameters()]
           for _ in range(OPTIM_STEPS)]
  kwargs = dict(opt=case['opt'] or fields['optimizer.name'], lr=recipe['learning_rate'],
                weight_decay=recipe['weight_decay'])
  clip = 0.0
  if case['opt']:
    # A recipe switched to another optimizer keeps its eps, betas and clipping: timm's
    # --opt-eps, --opt-betas and --clip-grad.
    kwargs.update(eps=fields['optimizer.eps'],
                  betas=(fields.get('optimizer.b1', 0.9), fields.get('optimizer.b2', 0.999)))
    clip = fields.get('optimizer.grad_clip_norm', 0.0)
  optimizer = create_optimizer_v2(model, **kwargs)
  rows = [np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])]
  rows += [np.concatenate([g.ravel() for g in step]) for step in grads]
  for step in grads:
    for p, g in zip(model.parameters(), step):
      p.grad = torch.from_numpy(g.copy())
    if clip:
      torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    rows.append(np.concatenate([p.detach().numpy().ravel() for p in model.parameters()]))
  np.save(os.path.join(OUT, f'optim_{case["name"]}.npy'), np.stack(rows).astype(np.float32))
  groups = [
      dict(
          params=[
              names[i]
              for i, p in enumerate(model.parameters())
              if any(p is q
                     for q in g['params'])
          ], **{
              k: v
              for k, v in g.items()
              if k in ('weight_decay', 'eps', 'betas', 'lr', 'max_grad_norm')
          })
      for g in optimizer.param_groups
  ]
  meta = dict(
      case, timm_kwargs=kwargs, clip_grad=clip,
      params=[[n, list(p.shape)] for n, p in model.named_parameters()],
      rows='params, the gradient of each step, params after each step',
      optimizer=type(optimizer).__name__, param_groups=groups, grad_norms=[
          float(np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in step))) for step in grads
      ], versions=versions())
  write_json(f'optim_{case["name"]}.json', meta)
  print(f'optim_{case["name"]}: {type(optimizer).__name__}, gradient norms '
        f'{[round(n, 6) for n in meta["grad_norms"]]}')


def write_crops():
  # get_params draws from Python's global `random`: one seed, then every draw in turn.
  random.seed(CROP_SEED)
  sampler = timm_transforms.RandomResizedCropAndInterpolation(224)
  for height, width in CROP_SHAPES:
    image = PIL.Image.new('RGB', (width, height))
    windows = [sampler.get_params(image, sampler.scale, sampler.ratio) for _ in range(CROP_DRAWS)]
    np.save(os.path.join(OUT, f'crop_{height}x{width}.npy'), np.array(windows, np.int16))
    areas = np.array([h * w for _, _, h, w in windows]) / (height * width)
    print(f'crop_{height}x{width}: {CROP_DRAWS} windows, mean area {areas.mean():.3f}')
  write_json(
      'crop.json',
      dict(shapes=CROP_SHAPES, draws=CROP_DRAWS, seed=CROP_SEED, scale=list(sampler.scale),
           ratio=list(sampler.ratio), columns=['top', 'left', 'height',
                                               'width'], versions=versions()))


def write_schedules():
  out = {}
  for name, recipe in recipes.RSB.items():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=recipe['learning_rate'])
    scheduler, num_epochs = create_scheduler_v2(optimizer, sched=TIMM_SCHEDULES[recipe['schedule']],
                                                num_epochs=int(recipe['epochs']),
                                                warmup_epochs=int(recipe['warmup']),
                                                step_on_epochs=True, **PERIOD_DEFAULTS)
    rates = []
    # train.py: the rate of epoch e is the one set after epoch e - 1 (scheduler.step(e)).
    for epoch in range(num_epochs):
      rates.append(optimizer.param_groups[0]['lr'])
      scheduler.step(epoch + 1)
    out[name] = dict(learning_rate=recipe['learning_rate'], epochs=recipe['epochs'],
                     warmup_epochs=recipe['warmup'], num_epochs=num_epochs, rates=rates)
    print(f'schedule {name}: {num_epochs} epochs, {rates[0]:.2e} .. {max(rates):.2e} .. '
          f'{rates[-1]:.2e}')
  write_json('schedule.json', dict(period_defaults=PERIOD_DEFAULTS, recipes=out,
                                   versions=versions()))


class _Recorder:
  """Records the (cy, cx) draws and the box of timm's rand_bbox during one Mixup call."""

  def __init__(self):
    self.centres, self.boxes = [], []
    self._randint, self._rand_bbox = np.random.randint, timm_mixup.rand_bbox

  def __enter__(self):

    def randint(*args, **kwargs):
      value = self._randint(*args, **kwargs)
      self.centres.append(int(value))
      return value

    def rand_bbox(*args, **kwargs):
      box = self._rand_bbox(*args, **kwargs)
      self.boxes.append([int(v) for v in box])
      return box

    np.random.randint, timm_mixup.rand_bbox = randint, rand_bbox
    return self

  def __exit__(self, *exc):
    np.random.randint, timm_mixup.rand_bbox = self._randint, self._rand_bbox


def mixer(force=None):
  fields = recipe_fields(MIX_RECIPE)
  switch = {None: fields['mix.switch_prob'], 'mixup': 0.0, 'cutmix': 1.0}[force]
  return timm_mixup.Mixup(mixup_alpha=fields['mix.mixup_alpha'],
                          cutmix_alpha=fields['mix.cutmix_alpha'], prob=fields['mix.prob'],
                          switch_prob=switch, mode='batch',
                          label_smoothing=fields['label_smoothing'], num_classes=MIX_CLASSES)


def write_mix():
  fields = recipe_fields(MIX_RECIPE)
  loss_fn = BinaryCrossEntropy(target_threshold=fields['bce_target_threshold'])
  cases = {}
  for name, seed, force, processes in MIX_CASES:
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(MIX_BATCH,) + MIX_SHAPE).astype(np.float32)
    labels = rng.integers(0, MIX_CLASSES, size=MIX_BATCH)
    logits = (rng.normal(size=(MIX_BATCH, MIX_CLASSES)) * 3).astype(np.float32)
    local = MIX_BATCH // processes
    np.random.seed(seed)
    mixed, targets, draws = [], [], []
    # Each process mixes its own local batch with its own draw (timm's train.py).
    for p in range(processes):
      part = slice(p * local, (p + 1) * local)
      state = np.random.get_state()
      lam_raw, cutmix = mixer(force)._params_per_batch()
      np.random.set_state(state)
      with _Recorder() as rec:
        x, t = mixer(force)(torch.from_numpy(images[part].copy()), torch.from_numpy(labels[part]))
      # Every case here mixes: prob 1, and a Beta draw is never exactly 1.
      assert lam_raw < 1.0
      draw = dict(cutmix=bool(cutmix), lam=float(lam_raw))
      if cutmix:
        draw.update(centre=rec.centres[-2:], box=rec.boxes[0])
      mixed.append(x.numpy())
      targets.append(t.numpy())
      draws.append(draw)
    targets = np.concatenate(targets)
    loss = float(loss_fn(torch.from_numpy(logits), torch.from_numpy(targets)))
    np.save(os.path.join(OUT, f'mix_{name}.npy'), np.stack([images, np.concatenate(mixed)]))
    cases[name] = dict(seed=seed, processes=processes, labels=labels.tolist(),
                       logits=logits.tolist(), draws=draws, targets=targets.tolist(), bce_loss=loss)
    print(f'mix_{name}: {draws}, bce {loss:.6f}')
  write_json(
      'mix.json',
      dict(recipe=MIX_RECIPE, batch=MIX_BATCH, num_classes=MIX_CLASSES,
           shape_nchw=[MIX_BATCH, *MIX_SHAPE], label_smoothing=fields['label_smoothing'],
           bce_target_threshold=fields['bce_target_threshold'],
           images='mix_<case>.npy: [input, mixed], NCHW', cases=cases, versions=versions()))


def versions():
  return {'torch': torch.__version__.split('+')[0], 'timm': timm.__version__}


def write_json(name, obj):
  with open(os.path.join(OUT, name), 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write('\n')


def main():
  torch.set_num_threads(1)
  torch.use_deterministic_algorithms(True)
  os.makedirs(OUT, exist_ok=True)
  for case in OPTIM_CASES:
    write_optim(case)
  write_crops()
  write_schedules()
  write_mix()


if __name__ == '__main__':
  main()
