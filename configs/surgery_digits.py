"""Fine-tuning a trained plain digits ResNet with SE blocks put in by surgery (docs/models.md).

The plain network (`configs/digits.py:model=cifar_resnet20`) is trained first
and its variables written as an imported-weights directory; this config then
starts from them (`--config.init_from=DIR`), puts SE blocks into the network
by `model.surgery` (the paper's place by default), each starting as the
identity, and fine-tunes everything at a tenth of the digits learning rate,
without warm-up. experiments/surgery_finetune.py runs the comparison with the
plain network fine-tuned for the same steps.

Arguments: `configs/surgery_digits.py:where=convs,min_channels=32,r=4,epochs=10`;
`identity_start=false` starts the blocks from the default initialisation.
"""

from configs import default
from configs import digits


def get_config(arg=None):
  args = default.parse_arg(arg, model='cifar_resnet20', where='residual', min_channels=32,
                           identity_start=True, r=4, epochs=10.0, lr=0.01, batch=128,
                           dtype='float32')
  config = digits.get_config(f'model={args["model"]},r={args["r"]},epochs={args["epochs"]},'
                             f'batch={args["batch"]},dtype={args["dtype"]}')
  config.model.surgery.where = args['where']
  config.model.surgery.min_channels = args['min_channels']
  config.model.surgery.identity_start = args['identity_start']
  config.learning_rate = args['lr']
  config.schedule.warmup_epochs = 0.0
  return config
