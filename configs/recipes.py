"""The training recipes of "ResNet strikes back" (Wightman, Touvron & Jegou 2021), as config fields.

`RSB[name]` holds a whole procedure as published for ImageNet: its batch (the
one its learning rate is given at), length, rate, weight decay, crop sizes and
`fields`, the pieces that do not depend on the data set (LAMB, BCE, Mixup and
CutMix, RandAugment, repeated augmentation, stochastic depth).
configs/imagenet.py runs the whole procedure; the small-image configs (digits,
CIFAR) take only the pieces, with their own batch, length and sizes.
docs/recipes.md cites each value.
"""

NAMES = ('rsb_a1', 'rsb_a2', 'rsb_a3')


def _rsb(epochs, learning_rate, weight_decay, label_smoothing, drop_path, magnitude, mixup,
         image_size, aug_repeats):
  """One procedure: what A1, A2 and A3 share, and what they don't."""
  return dict(
      batch=2048, epochs=epochs, schedule='cosine', warmup=5.0, learning_rate=learning_rate,
      weight_decay=weight_decay, image_size=image_size, eval_image_size=224, eval_crop=0.95,
      fields={
          'optimizer.name': 'lamb',
          'optimizer.weight_decay': weight_decay,
          'optimizer.decay_bn_and_bias': False,
          'schedule.name': 'cosine',
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
    'rsb_a1': _rsb(600.0, 5e-3, 0.01, label_smoothing=0.1, drop_path=0.05, magnitude=7.0,
                   mixup=0.2, image_size=224, aug_repeats=3),
    'rsb_a2': _rsb(300.0, 5e-3, 0.02, label_smoothing=0.0, drop_path=0.05, magnitude=7.0,
                   mixup=0.1, image_size=224, aug_repeats=3),
    'rsb_a3': _rsb(100.0, 8e-3, 0.02, label_smoothing=0.0, drop_path=0.0, magnitude=6.0,
                   mixup=0.1, image_size=160, aug_repeats=1),
}


def set_fields(config, fields):
  """Sets dotted `fields` ({'mix.cutmix_alpha': 1.0, ...}) on `config`."""
  for field, value in fields.items():
    node = config
    *parents, leaf = field.split('.')
    for part in parents:
      node = node[part]
    node[leaf] = value


def apply_pieces(config, recipe, learning_rate, warmup_epochs):
  """A small-image config trained with `recipe`'s pieces at its own batch, length and sizes.

  LAMB's rate is not SGD's: `learning_rate` is the data set's own LAMB rate at
  its batch (config.lr_reference_batch stays the config's).
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
