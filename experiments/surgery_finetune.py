"""SE blocks put into a trained plain network by surgery, fine-tuned, against fine-tuning it plain.

    .venv/bin/python -m experiments.surgery_finetune [--seeds=3] [--pretrain_epochs=20]
        [--finetune_epochs=10]

The digits' plain CIFAR ResNet-20 (se_flax's `cifar_resnet20`, r = 4 for the
blocks) is trained from scratch at the digits config's recipe (SGD with
Nesterov momentum 0.9, weight decay 5e-4, cosine from lr 0.1, batch 128,
random 1-pixel shifts), and its test accuracy read. Then, for the same number
of fine-tuning steps at a tenth of the rate, each arm starts from those
weights:

  plain              the plain network itself
  residual/identity  SE at the paper's place, each block starting as the identity
  residual/default   SE at the paper's place, default initialisation
  convs>=32/identity SE after every convolution with >= 32 outputs, identity start

The arms share the data order. The table gives the test accuracy of the
pretrained network, each arm's at the first step (identity start must equal
the plain network's) and after fine-tuning, as mean and range over seeds.
Accuracies are recorded in docs/models.md, not asserted by any test.
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import surgery_digits
from se_flax import models
from se_flax import surgery
from se_flax.data import datasets
from se_flax.layers.se import SESpec

SPEC = SESpec(reduction=4)
ARMS = (('plain', None, 0, False), ('residual/identity', 'residual', 0, True),
        ('residual/default', 'residual', 0, False), ('convs>=32/identity', 'convs', 32, True))


def load():
  from se_flax.data import digits  # pylint: disable=g-import-not-at-top
  # The data set configs/surgery_digits.py trains on: the digits the loader below reads.
  spec = datasets.get(surgery_digits.get_config().dataset.name)
  norm = lambda x: (x.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)
  (xtr, ytr), (xte, yte) = digits.load_split('train'), digits.load_split('test')
  return norm(xtr), ytr, norm(xte), yte


def shifted(rng, x):
  """Random 1-pixel shifts: the digits config's pad-and-crop, without flips."""
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='constant',
                  constant_values=float(x.min()))
  dy, dx = rng.integers(0, 3, size=(2, len(x)))
  return np.stack([p[i:i + 8, j:j + 8] for p, i, j in zip(padded, dy, dx)])


def train(model, variables, data, lr, epochs, seed, batch=128):
  xtr, ytr = data[:2]
  steps_per_epoch = len(xtr) // batch
  total = steps_per_epoch * epochs
  tx = optax.chain(optax.add_decayed_weights(5e-4),
                   optax.sgd(optax.cosine_decay_schedule(lr, total), momentum=0.9, nesterov=True))

  @jax.jit
  def step(params, stats, opt_state, x, y):

    def loss_fn(p):
      logits, new = model.apply({
          'params': p,
          'batch_stats': stats
      }, x, train=True, mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

    (_, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new['batch_stats'], opt_state

  params, stats = variables['params'], variables['batch_stats']
  opt_state = tx.init(params)
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(len(xtr))
    for k in range(steps_per_epoch):
      rows = order[k * batch:(k + 1) * batch]
      params, stats, opt_state = step(params, stats, opt_state, shifted(rng, xtr[rows]), ytr[rows])
  return {'params': params, 'batch_stats': stats}


def accuracy(model, variables, data):
  xte, yte = data[2:]
  logits = jax.jit(functools.partial(model.apply, train=False))(variables, xte)
  return float(np.mean(np.argmax(np.asarray(logits), -1) == yte))


def run_seed(seed, data, pretrain_epochs, finetune_epochs):
  plain = models.create_model('cifar_resnet20', 10)
  x = jnp.zeros((1, 8, 8, 1))
  variables = jax.jit(functools.partial(plain.init, train=False))(jax.random.PRNGKey(seed), x)
  pretrained = train(plain, variables, data, 0.1, pretrain_epochs, seed)
  row = {'pretrained': accuracy(plain, pretrained, data)}
  for name, where, min_channels, identity in ARMS:
    if where is None:
      model, start = plain, pretrained
    else:
      model = surgery.add_se(plain, SPEC, where, min_channels=min_channels or 128,
                             identity_start=identity, args=(x,), kwargs={'train': False})
      fresh = jax.jit(functools.partial(model.init, train=False))(jax.random.PRNGKey(seed + 1), x)
      start = surgery.with_plain_weights(fresh, pretrained)
    row[f'{name} start'] = accuracy(model, start, data)
    row[name] = accuracy(model, train(model, start, data, 0.01, finetune_epochs, seed + 100), data)
  return row


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--pretrain_epochs', type=int, default=20)
  parser.add_argument('--finetune_epochs', type=int, default=10)
  args = parser.parse_args(argv)
  data = load()
  rows = [run_seed(s, data, args.pretrain_epochs, args.finetune_epochs) for s in range(args.seeds)]
  print(f'cifar_resnet20 on digits, {args.pretrain_epochs} epochs from scratch, then '
        f'{args.finetune_epochs} epochs of fine-tuning; test accuracy (%) over {args.seeds} seeds')
  print(f'{"":<22}{"mean":>7}{"min":>7}{"max":>7}')
  for key in rows[0]:
    values = 100 * np.array([r[key] for r in rows])
    print(f'{key:<22}{values.mean():>7.2f}{values.min():>7.2f}{values.max():>7.2f}')


if __name__ == '__main__':
  main()
