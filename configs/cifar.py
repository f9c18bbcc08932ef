"""CIFAR-10/100 (paper Tables 4 and 5).

The ResNet paper's CIFAR schedule (He et al. 2016, section 4.2): SGD momentum
0.9, batch 128, lr 0.1, divided by 10 at 50% and 75% of training (epochs 82
and 123 of 164 here, i.e. 32k/48k of 64k iterations), weight decay 1e-4;
augmentation is a 4-pixel zero pad, a random 32x32 crop and a horizontal flip.

`recipe=rsb_a3` (or rsb_a1, rsb_a2) trains with that "ResNet strikes back"
procedure's pieces (configs/recipes.py) at this file's batch, length and size,
with LAMB at LAMB_RATE, the rate configs/digits.py uses at the same batch (a
starting point: it has not been tuned on CIFAR).

Arguments: `configs/cifar.py:model=se_cifar_resnet110,dataset=cifar100`,
`configs/cifar.py:recipe=rsb_a3`.
"""

from configs import default
from configs import digits
from configs import recipes

LAMB_RATE = digits.LAMB_RATE


def get_config(arg=None):
  args = default.parse_arg(arg, model='se_cifar_resnet110', dataset='cifar10', r=16, batch=128,
                           epochs=164.0, dtype='float32', recipe='paper')
  config = default.small_image_config(args, args['dataset'], shuffle_buffer=50_000,
                                      eval_batch_size=1000)
  config.schedule.name = 'step'
  config.schedule.boundaries_epochs = (args['epochs'] * 0.5, args['epochs'] * 0.75)
  config.schedule.step_factor = 0.1
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  if args['recipe'] != 'paper':
    # The recipes' cosine schedule replaces the step decay.
    config.schedule.boundaries_epochs = ()
  return recipes.apply_pieces(config, args['recipe'], LAMB_RATE, warmup_epochs=5.0)
