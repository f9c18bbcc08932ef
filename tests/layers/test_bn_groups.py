"""config.bn_group_size reaches every BatchNorm of a network built from a config.

Every BatchNorm call of a training-mode forward pass is intercepted; its
output must be its input normalised with the mean and variance of each group
of `bn_group_size` consecutive examples, computed here with numpy.
"""

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import default
from se_flax import models
from se_flax.layers.norm import BatchNorm

BATCH = 8


def _config(name, bn_group_size):
  config = default.get_base_config()
  config.model.name = name
  config.bn_group_size = bn_group_size
  return config


def _bn_calls(model, x):
  """[(input, output, scale, bias, epsilon)] of every BatchNorm call of one training step."""
  variables = model.init(jax.random.PRNGKey(0), x[:2], train=False)
  calls = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if isinstance(module, BatchNorm) and context.method_name == '__call__':
      params = module.variables['params']
      normalised = getattr(out, 'value', out)  # a Normalised before an SE block
      calls.append((args[0], normalised, params['scale'], params['bias'], module.epsilon))
    return out

  with nn.intercept_methods(record):
    model.apply(variables, x, train=True, mutable=['batch_stats'])
  return [jax.tree.map(np.asarray, c[:4]) + (c[4],) for c in calls]


def _grouped_reference(x, scale, bias, epsilon, group_size):
  x = np.asarray(x, np.float64)
  groups = x.reshape((-1, group_size) + x.shape[1:])
  axes = tuple(range(1, groups.ndim - 1))
  mean = groups.mean(axis=axes, keepdims=True)
  var = groups.var(axis=axes, keepdims=True)
  return ((groups - mean) / np.sqrt(var + epsilon) * scale + bias).reshape(x.shape)


@pytest.mark.parametrize('name,shape,group_size', [('se_cifar_resnet20', (8, 8, 1), 0),
                                                   ('se_cifar_resnet20', (8, 8, 1), 2),
                                                   ('se_cifar_resnet20', (8, 8, 1), 4),
                                                   ('se_resnet18', (32, 32, 3), 2)])
def test_every_batchnorm_uses_the_configured_groups(name, shape, group_size):
  model = models.from_config(_config(name, group_size), 10)
  x = np.random.default_rng(0).normal(size=(BATCH,) + shape).astype(np.float32)
  calls = _bn_calls(model, x)
  assert len(calls) > 10
  for i, (inp, out, scale, bias, epsilon) in enumerate(calls):
    expected = _grouped_reference(inp, scale, bias, epsilon, group_size or BATCH)
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3, err_msg=f'BatchNorm call {i}')


def test_group_statistics_differ_from_whole_batch_statistics():
  # Otherwise the test above could not tell a group size from another.
  x = np.random.default_rng(0).normal(size=(BATCH, 8, 8, 1)).astype(np.float32)
  x[:BATCH // 2] += 3.0
  calls = _bn_calls(models.from_config(_config('se_cifar_resnet20', 2), 10), x)
  inp, out, scale, bias, epsilon = calls[0]
  whole = _grouped_reference(inp, scale, bias, epsilon, BATCH)
  assert np.abs(out - whole).max() > 0.1
