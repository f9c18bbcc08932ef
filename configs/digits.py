"""The embedded default: scikit-learn's 8x8 handwritten digits through tfds.

1797 real images (1437 train / 360 test), no download, so `make demo` trains
an SE network from scratch on any machine in a few minutes of CPU. The model
is the CIFAR SE-ResNet-20 on 8x8x1 inputs (stages at 8x8, 4x4 and 2x2).

`recipe=rsb_a3` (or rsb_a1, rsb_a2) trains with that "ResNet strikes back"
procedure's pieces (configs/recipes.py: LAMB, BCE, Mixup/CutMix, RandAugment,
stochastic depth) at this file's batch, length and size, with LAMB at
LAMB_RATE.

Arguments: `configs/digits.py:model=cifar_resnet20,r=4,epochs=10`,
`configs/digits.py:recipe=rsb_a3`.
"""

from configs import default
from configs import recipes

# LAMB's rate at batch 128 for the recipes' runs here.
LAMB_RATE = 0.02


def get_config(arg=None):
  # r=4: at r=16 the 16-channel first stage would keep a single hidden unit.
  args = default.parse_arg(arg, model='se_cifar_resnet20', r=4, batch=128, epochs=40.0,
                           dtype='float32', recipe='paper')
  config = default.small_image_config(args, 'digits', shuffle_buffer=2048, eval_batch_size=360)
  config.optimizer.weight_decay = 5e-4
  config.optimizer.nesterov = True
  config.schedule.name = 'cosine'
  config.schedule.warmup_epochs = 1.0
  config.log_every_steps = 20
  config.eval_every_steps = 110  # every 10 epochs
  config.checkpoint_every_steps = 110
  return recipes.apply_pieces(config, args['recipe'], LAMB_RATE, warmup_epochs=1.0)
