"""The training recipes of "ResNet strikes back" (Wightman, Touvron & Jegou 2021), as config fields.

`RSB[name]` holds a whole procedure as RSB ran it in timm for ImageNet: its
batch (the one its learning rate is given at), the cosine's length and the
cool-down after it, rate, weight decay, crop sizes, the per-GPU batch, and
`fields`, the pieces that do not depend on the data set (LAMB as timm's,
timm's epoch-wise cosine, BCE, Mixup and CutMix, RandAugment, repeated
augmentation, stochastic depth). `IMAGENET_FIELDS` are the pieces that hold
for ImageNet only (the crop sampler, the ResNet layout). configs/imagenet.py
runs the whole procedure; the small-image configs (digits, CIFAR) take only
the pieces, with their own batch, length and sizes.

Plain Python: tests/recipes/make_fixtures.py imports this file without jax to
hand timm the same values. docs/recipes.md cites each value.
"""

NAMES = ('rsb_a1', 'rsb_a2', 'rsb_a3')

# RSB trained on one node of four V100 GPUs (RSB section 2.1): 2048 / 4 = 512 images per GPU,
# which is where timm's BatchNorm takes its statistics (no --sync-bn) and where its Mixup
# pairs images (each process mixes its own batch).
GPU_BATCH = 512

# Values timm applied without RSB's command lines naming them: Lamb's own defaults
# (timm/optim/lamb.py) and train.py's schedule defaults of the timm RSB was trained with
# (0.4.12 / 0.5). tests/recipes compares each with timm.
TIMM_LAMB_EPS = 1e-6
TIMM_LAMB_MAX_GRAD_NORM = 1.0
TIMM_WARMUP_LR = 1e-4
TIMM_MIN_LR = 1e-6
TIMM_COOLDOWN_EPOCHS = 10.0


def _rsb(epochs, learning_rate, weight_decay, label_smoothing, drop_path, magnitude, mixup,
         image_size, aug_repeats):
  """One procedure: what A1, A2 and A3 share, and what they don't."""
  return dict(
      batch=2048, epochs=epochs, cooldown=TIMM_COOLDOWN_EPOCHS, schedule='timm_cosine', warmup=5.0,
      learning_rate=learning_rate, weight_decay=weight_decay, image_size=image_size,
      eval_image_size=224, eval_crop=0.95, gpu_batch=GPU_BATCH, fields={
          'optimizer.name': 'lamb',
          'optimizer.weight_decay': weight_decay,
          'optimizer.decay_bn_and_bias': False,
          'optimizer.eps': TIMM_LAMB_EPS,
          'optimizer.grad_clip_norm': TIMM_LAMB_MAX_GRAD_NORM,
          'lr_scaling': 'sqrt',
          'schedule.name': 'timm_cosine',
          'schedule.warmup_lr': TIMM_WARMUP_LR,
          'schedule.min_lr': TIMM_MIN_LR,
          'loss': 'bce',
          'bce_target_threshold': 0.2,
          'label_smoothing': label_smoothing,
          'model.drop_path_rate': drop_path,
          'dataset.randaugment.num_ops': 2,
          'dataset.randaugment.magnitude': magnitude,
          'dataset.randaugment.magnitude_std': 0.5,
          'dataset.randaugment.increasing': True,
          'dataset.aug_repeats': aug_repeats,
          'mix.mixup_alpha': mixup,
          'mix.cutmix_alpha': 1.0,
          'mix.prob': 1.0,
          'mix.switch_prob': 0.5,
      })


RSB = {
    'rsb_a1':
        _rsb(600.0, 5e-3, 0.01, label_smoothing=0.1, drop_path=0.05, magnitude=7.0, mixup=0.2,
             image_size=224, aug_repeats=3),
    'rsb_a2':
        _rsb(300.0, 5e-3, 0.02, label_smoothing=0.0, drop_path=0.05, magnitude=7.0, mixup=0.1,
             image_size=224, aug_repeats=3),
    'rsb_a3':
        _rsb(100.0, 8e-3, 0.02, label_smoothing=0.0, drop_path=0.0, magnitude=6.0, mixup=0.1,
             image_size=160, aug_repeats=1),
}

# ImageNet only: timm's RandomResizedCrop, and timm's resnet50, which strides the 3x3
# (configs/imagenet.py sets the layout on networks that have the option).
IMAGENET_FIELDS = {'dataset.crop_sampler': 'timm'}
STRIDE_IN_1X1 = False


def set_fields(config, fields):
  """Sets dotted `fields` ({'mix.cutmix_alpha': 1.0, ...}) on `config`."""
  for field, value in fields.items():
    node = config
    *parents, leaf = field.split('.')
    for part in parents:
      node = node[part]
    node[leaf] = value


def group_size(batch, gpu_batch=GPU_BATCH):
  """Examples per BatchNorm and Mixup group at `batch`: RSB's per-GPU batch when it divides
  `batch` into several groups, else 0, the whole batch (one GPU's worth or an uneven split)."""
  return gpu_batch if batch > gpu_batch and batch % gpu_batch == 0 else 0


def apply_pieces(config, recipe, learning_rate, warmup_epochs):
  """A small-image config trained with `recipe`'s pieces at its own batch, length and sizes.

  LAMB's rate is not SGD's: `learning_rate` is the data set's own LAMB rate at
  its batch (config.lr_reference_batch stays the config's). The cool-down and
  the per-GPU groups belong to ImageNet's length and batch and stay off.
  """
  if recipe == 'paper':
    return config
  if recipe not in RSB:
    raise ValueError(f'config argument recipe={recipe!r} is unknown; choose one of '
                     f"{['paper', *NAMES]}")
  set_fields(config, RSB[recipe]['fields'])
  config.learning_rate = learning_rate
  config.schedule.warmup_epochs = warmup_epochs
  config.optimizer.nesterov = False
  return config
