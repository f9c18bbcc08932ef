"""ImageNet with the paper's recipes (section 6.1, Tables 2 and 3) and the modern ones.

`recipe=paper` (the default; ResNets, VGG, the Inceptions): SGD with
momentum 0.9, batch 1024, lr 0.6 (scaled linearly with the batch), divided by
10 every 30 epochs for 100 epochs, weight decay 1e-4; random-size crops
(8%-100% area, aspect 3/4-4/3) with flips; evaluation resizes the short side
and takes the centre crop; r = 16.

`recipe=mobile` (MobileNet and ShuffleNet, section 5.1): batch 256, lr 0.1,
weight decay 4e-5, lighter augmentation as in ShuffleNet, about 400 epochs.
The paper divides the lr by 10 on plateaus; a run here divides it every 100
epochs instead, and "lighter" becomes crops of at least 25% of the image
(`config.dataset.crop_area_range`, read by the training crop); both are our
readings.

`recipe=rsb_a1`, `rsb_a2`, `rsb_a3`: the three procedures of "ResNet strikes
back" (Wightman, Touvron & Jegou 2021) as timm ran them: LAMB with timm's eps
and clipping, timm's epoch-wise cosine schedule with 5 warm-up epochs at
batch 2048 and 10 cool-down epochs, binary cross-entropy, Mixup and CutMix
per GPU batch of 512, BatchNorm statistics per 512 images, RandAugment, (A1,
A2) stochastic depth, timm's random-size crop and its ResNet layout (stride on
the 3x3); A3 trains at 160 px and tests at 224. `epochs=` sets the cosine's
length, as timm's --epochs does; the run adds `cooldown=` epochs (the
recipe's 10 unless given). docs/recipes.md gives every value with its source;
a test checks this file against that table, and tests/recipes checks the
optimizer, schedule, crop and Mixup against timm itself.

Crop sizes: each model's published single-crop size (zoo.INPUT_SIZES: 299
for Inception-ResNet-v2, with a 352 resize for evaluation; 224 and 256 for the
rest) under `paper` and `mobile`, the recipe's own sizes under `rsb_*`, unless
`image_size` / `eval_resize` are given.

Arguments: `configs/imagenet.py:model=se_resnet50,r=8,batch=256,schedule=cosine`,
`configs/imagenet.py:model=resnet50,recipe=rsb_a3,epochs=20,cooldown=0`,
`configs/imagenet.py:model=se_mobilenet_v1,recipe=mobile`,
`configs/imagenet.py:model=se_resnet50,recipe=rsb_a3`.
"""

import math

from configs import default
from configs import recipes
from se_flax import models
from se_flax.models import zoo

# The evaluation resize that goes with each training crop size (paper, mobile).
EVAL_RESIZES = {224: 256, 299: 352}
# Random-size crop area ranges (fractions of the image) per recipe.
CROP_AREA_RANGES = {
    'paper': (0.08, 1.0),
    'mobile': (0.25, 1.0),
    'rsb_a1': (0.08, 1.0),
    'rsb_a2': (0.08, 1.0),
    'rsb_a3': (0.08, 1.0)
}

# Each recipe's batch (the one its learning rate is given at), length, schedule, weight decay,
# and the other fields it sets. docs/recipes.md cites the source of every value.
RECIPES = {
    'paper':
        dict(batch=1024, epochs=100.0, schedule='step', step_epochs=30.0, learning_rate=0.6,
             weight_decay=1e-4),
    'mobile':
        dict(batch=256, epochs=400.0, schedule='step', step_epochs=100.0, learning_rate=0.1,
             weight_decay=4e-5),
    **recipes.RSB,
}


def get_config(arg=None):
  args = default.parse_arg(arg, model='se_resnet50', r=16, batch=0, epochs=0.0, schedule='',
                           warmup=-1.0, smoothing=-1.0, nesterov=False, dtype='float32',
                           recipe='paper', image_size=0, eval_resize=0, cooldown=-1.0)
  if args['recipe'] not in RECIPES:
    raise ValueError(f'config argument recipe={args["recipe"]!r} is unknown; choose one of '
                     f'{sorted(RECIPES)}')
  recipe = RECIPES[args['recipe']]
  config = default.get_base_config()
  default.set_model(config, args)

  _set_sizes(config, args, recipe)
  config.dataset.crop_area_range = CROP_AREA_RANGES[args['recipe']]

  batch = args['batch'] or recipe['batch']
  config.batch_size = batch
  config.eval_batch_size = batch
  # timm trains its schedule's epochs, then the cool-down at the floor (a step decay has none).
  schedule = args['schedule'] or recipe['schedule']
  cooldown = recipe.get('cooldown', 0.0) if schedule != 'step' else 0.0
  if args['cooldown'] >= 0:
    cooldown = args['cooldown']
  config.num_epochs = (args['epochs'] or recipe['epochs']) + cooldown
  # The learning rate is given at the recipe's own batch and scaled (lr_scaling) from there.
  config.learning_rate = recipe['learning_rate']
  config.lr_reference_batch = recipe['batch']
  config.optimizer.weight_decay = recipe['weight_decay']
  config.optimizer.nesterov = args['nesterov']
  config.schedule.name = recipe['schedule']
  config.schedule.step_epochs = recipe.get('step_epochs', config.schedule.step_epochs)
  config.schedule.warmup_epochs = recipe.get('warmup', 0.0)
  config.schedule.cooldown_epochs = cooldown
  recipes.set_fields(config, recipe.get('fields', {}))
  if args['recipe'] in recipes.RSB:
    _timm_defaults(config, recipe['gpu_batch'])
  # Arguments given on the command line win over the recipe.
  if args['schedule']:
    config.schedule.name = args['schedule']
    if args['schedule'] == 'step':
      # A step decay reads none of the cosine's ends; its warm-up starts at its first step.
      for field in ('warmup_lr', 'min_lr', 'cooldown_epochs'):
        config.schedule[field] = 0.0
  if args['warmup'] >= 0:
    config.schedule.warmup_epochs = args['warmup']
  if args['smoothing'] >= 0:
    config.label_smoothing = args['smoothing']
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  return config


def _timm_defaults(config, gpu_batch):
  """What RSB's timm did beyond its command line: the crop sampler, BatchNorm and Mixup per GPU
  batch, and the ResNet layout of timm's resnet50 (stride on the 3x3) where the network has one."""
  recipes.set_fields(config, recipes.IMAGENET_FIELDS)
  groups = recipes.group_size(config.batch_size, gpu_batch)
  config.bn_group_size = groups
  config.mix.group_size = groups
  try:
    models.create_model(config.model.name, 1, stride_in_1x1=recipes.STRIDE_IN_1X1)
  except ValueError:
    return  # no bottleneck stride to place (or an unknown name, which the check reports)
  config.model.stride_in_1x1 = recipes.STRIDE_IN_1X1


def _set_sizes(config, args, recipe):
  """Train crop, test crop and the test resize: given, else the recipe's, else the model's."""
  image_size = args['image_size'] or recipe.get('image_size') or zoo.INPUT_SIZES.get(
      args['model'], 224)
  eval_image_size = recipe.get('eval_image_size', 0)
  test_size = eval_image_size or image_size
  if args['eval_resize']:
    eval_resize = args['eval_resize']
  elif 'eval_crop' in recipe:
    # timm's resize for a crop ratio: floor(224 / 0.95) = 235.
    eval_resize = math.floor(test_size / recipe['eval_crop'])
  else:
    eval_resize = EVAL_RESIZES.get(test_size, round(test_size / 0.875))
  config.dataset.name = 'imagenet2012'
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'validation'
  config.dataset.image_size = image_size
  config.dataset.eval_image_size = eval_image_size
  config.dataset.eval_resize = eval_resize
