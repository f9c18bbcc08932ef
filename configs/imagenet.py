"""ImageNet with the paper's recipe (section 6.1, Table 2).

SGD with momentum 0.9, batch 1024, lr 0.6 (scaled linearly with the batch),
divided by 10 every 30 epochs for 100 epochs, weight decay 1e-4; random-size
crops (8%-100% area, aspect 3/4-4/3) to 224 with flips; evaluation resizes the
short side to 256 and takes the 224 center crop; r = 16.

Arguments: `configs/imagenet.py:model=se_resnet50,r=8,batch=256,schedule=cosine`.
"""

from configs import default


def get_config(arg=None):
  args = default.parse_arg(arg, model='se_resnet50', r=16, batch=1024, epochs=100.0,
                           schedule='step', warmup=0.0, smoothing=0.0, nesterov=False,
                           dtype='float32')
  config = default.get_base_config()
  default.set_model(config, args)

  config.dataset.name = 'imagenet2012'
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'validation'
  config.dataset.image_size = 224
  config.dataset.eval_resize = 256

  config.batch_size = args['batch']
  config.eval_batch_size = args['batch']
  config.num_epochs = args['epochs']
  config.learning_rate = 0.6
  config.lr_reference_batch = 1024
  config.optimizer.nesterov = args['nesterov']
  config.schedule.name = args['schedule']
  config.schedule.warmup_epochs = args['warmup']
  config.label_smoothing = args['smoothing']
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  return config
