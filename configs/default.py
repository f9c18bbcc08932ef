"""Fields shared by every config; dataset files (imagenet.py, cifar.py, digits.py) override them.

A config file's `get_config(arg)` takes an optional "key=value,..." string
(big_vision style), e.g. `configs/imagenet.py:model=se_resnet50,r=8`.
"""

import dataclasses
import difflib

import ml_collections

from se_flax.data import datasets
from se_flax.layers.se import SESpec


def se_config():
  """config.model.se: one field per SESpec field, with the spec's defaults (the paper's block)."""
  fields = {f.name: f.default for f in dataclasses.fields(SESpec)}
  # A placeholder, so that stages may be a tuple of stage indices or None (all stages).
  fields['stages'] = ml_collections.config_dict.placeholder(tuple)
  return ml_collections.ConfigDict(fields)


def small_image_config(args, dataset, shuffle_buffer, eval_batch_size):
  """A data set held in memory, at its stored size, with the CIFAR ResNet's lr 0.1 at batch 128.

  `args` (from parse_arg) gives model, dtype, r, batch and epochs.
  """
  config = get_base_config()
  set_model(config, args)
  spec = datasets.get(dataset)
  config.dataset.name = dataset
  config.dataset.train_split = spec.train_split
  config.dataset.eval_split = spec.eval_split
  config.dataset.image_size = spec.image_size
  config.dataset.eval_resize = spec.image_size
  config.dataset.shuffle_buffer = shuffle_buffer
  config.dataset.cache = True

  config.batch_size = args['batch']
  config.eval_batch_size = eval_batch_size
  config.num_epochs = args['epochs']
  config.learning_rate = 0.1
  config.lr_reference_batch = 128
  return config


def set_model(config, args):
  """The model fields every config file takes as arguments: model, dtype and r."""
  config.model.name = args['model']
  config.model.dtype = args['dtype']
  config.model.se.reduction = args['r']


def get_base_config():
  config = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  config.model.name = 'se_resnet50'
  config.model.dtype = 'float32'  # compute dtype: a name in se_flax.models.DTYPES
  config.model.stride_in_1x1 = None  # None: the preset's default
  config.model.bn_momentum = 0.9
  config.model.bn_epsilon = 1e-5
  config.model.zero_init_residual = True
  config.model.drop_path_rate = 0.0  # stochastic depth at the last block; linear over depth
  config.model.se = se_config()
  # SE blocks put into config.model.name's plain network by surgery (docs/models.md), with the
  # spec config.model.se; off while `where` is empty.
  config.model.surgery = ml_collections.ConfigDict()
  config.model.surgery.where = ''  # 'residual' (the paper's place) or 'convs'
  config.model.surgery.min_channels = 128  # 'convs': convolutions with at least this many outputs
  config.model.surgery.identity_start = False  # the blocks start as the identity

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'imagenet2012'
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  config.dataset.manual_dir = ml_collections.config_dict.placeholder(str)
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'validation'
  config.dataset.image_size = 224
  config.dataset.eval_resize = 256
  config.dataset.shuffle_buffer = 16_384
  config.dataset.cache = False
  config.dataset.loader = 'tf.data'  # a name in datasets.LOADERS; 'grain': process-count free
  config.dataset.prefetch = 2
  config.dataset.eval_image_size = 0  # 0: image_size (train and test resolution may differ)
  config.dataset.crop_sampler = 'tf'  # random-size crop: a name in datasets.CROP_SAMPLERS
  # (min, max) fraction of the image area the random-size crop covers; None: Inception's
  # (0.08, 1.0).
  config.dataset.crop_area_range = ml_collections.config_dict.placeholder(tuple)
  # Host-side augmentation of the uint8 training crop (docs/recipes.md).
  config.dataset.randaugment = ml_collections.ConfigDict()
  config.dataset.randaugment.num_ops = 0  # 0: off; RandAugment's N
  config.dataset.randaugment.magnitude = 0.0  # M, on the 0..10 scale
  config.dataset.randaugment.magnitude_std = 0.0
  config.dataset.randaugment.increasing = False  # timm's "inc1" op variants
  config.dataset.random_erasing = 0.0  # probability of erasing one rectangle per image
  config.dataset.aug_repeats = 1  # copies of each example per epoch (repeated augmentation)

  config.batch_size = 1024  # global
  config.eval_batch_size = 1024  # global
  config.bn_group_size = 0  # 0: global (synchronised) BN; k: groups of k examples
  config.seed = 0
  config.num_epochs = 100.0
  config.num_train_steps = -1  # overrides num_epochs when positive

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'sgd'  # a name in se_flax.train.optim.OPTIMIZERS
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 1e-4
  config.optimizer.decay_bn_and_bias = True
  config.optimizer.b1 = 0.9  # adamw, lamb
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.grad_clip_norm = 0.0  # 0: off; clip the global gradient norm to this

  config.learning_rate = 0.6  # at batch 1024; scaled linearly with batch_size
  config.lr_reference_batch = 1024
  config.lr_scaling = 'linear'  # away from lr_reference_batch: 'linear' or 'sqrt'
  config.schedule = ml_collections.ConfigDict()
  config.schedule.name = 'step'  # a name in se_flax.train.optim.SCHEDULES
  config.schedule.warmup_epochs = 0.0
  config.schedule.step_epochs = 30.0  # step: divide by step_factor every step_epochs
  config.schedule.step_factor = 0.1
  config.schedule.boundaries_epochs = ()  # step: decay at these epochs instead, if given
  config.schedule.warmup_lr = 0.0  # cosine schedules: the warm-up starts from this rate
  config.schedule.min_lr = 0.0  # cosine schedules: the floor the cosine ends at
  config.schedule.cooldown_epochs = 0.0  # cosine schedules: last epochs held at min_lr
  config.label_smoothing = 0.0
  config.loss = 'softmax'  # a name in se_flax.train.step.LOSSES
  config.bce_target_threshold = 0.0  # bce: targets above it become 1 (RSB: 0.2)

  # Mixup / CutMix on the device, keyed by (seed, step).
  config.mix = ml_collections.ConfigDict()
  config.mix.mixup_alpha = 0.0  # 0: no mixup
  config.mix.cutmix_alpha = 0.0  # 0: no cutmix
  config.mix.prob = 1.0  # probability a batch is mixed at all
  config.mix.switch_prob = 0.5  # with both: probability of cutmix over mixup
  config.mix.group_size = 0  # 0: the global batch is mixed as one; k: groups of k

  # Exponential moving average of the weights (0: off).
  config.ema = ml_collections.ConfigDict()
  config.ema.decay = 0.0
  config.ema.select_best = 'ema'  # which weights' eval error ranks the best checkpoint

  config.log_every_steps = 100
  config.eval_every_steps = -1  # -1: once per epoch
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.keep_best = True
  config.nan_policy = 'stop'  # a name in se_flax.train.step.NAN_POLICIES
  config.profile_steps = ()  # (start, stop) writes a profiler trace
  config.init_from = ml_collections.config_dict.placeholder(str)

  # --mode=analyze: excitation statistics (paper section 7.2, Figs. 6 and 7).
  config.analysis = ml_collections.ConfigDict()
  config.analysis.classes = (0, 1, 2, 3)  # classes drawn as separate lines
  config.analysis.num_images = 2048  # images of the eval split to run (all if fewer)
  return config


def parse_arg(arg, **defaults):
  """Parses "key=value,key2=value2" into a dict over `defaults`, converting by their types."""
  out = dict(defaults)
  if not arg:
    return out
  for item in arg.split(','):
    if not item:
      continue
    if '=' not in item:
      raise ValueError(f'config argument {item!r} is not key=value; known keys: {sorted(defaults)}')
    key, value = item.split('=', 1)
    if key not in defaults:
      close = difflib.get_close_matches(key, sorted(defaults), n=1)
      hint = f'did you mean {close[0]!r}? ' if close else ''
      raise ValueError(f'config argument {key!r} is unknown; {hint}known keys: {sorted(defaults)}')
    out[key] = _convert(key, value, defaults[key])
  return out


def _convert(key, value, default):
  kind = type(default)
  if kind is bool:
    if value.lower() not in ('1', 'true', 'yes', '0', 'false', 'no'):
      raise ValueError(f'config argument {key}={value!r} must be true or false')
    return value.lower() in ('1', 'true', 'yes')
  if default is None or kind is str:
    return value
  try:
    return kind(value)
  except ValueError:
    kind_name = 'an integer' if kind is int else 'a number'
    raise ValueError(f'config argument {key}={value!r} must be {kind_name} '
                     f'(default {default!r})') from None
