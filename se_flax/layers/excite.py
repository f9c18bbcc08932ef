"""Excitations z -> pre-gate logits, and the gates that turn them into scales.

Section 3.2: the excitation is a bottleneck of two fully connected layers
(C -> C/r -> C) with a ReLU between, followed by a gate (sigmoid in the paper;
Table 12 compares ReLU and tanh). The layers act on the last axis only, so on a
spatial descriptor (gather, NoSqueeze) they are exactly 1x1 convolutions.

An excitation is `fn(z, channels, reduced, spec, module) -> logits` with
`logits.shape[-1] == channels`, registered with `reduces=True` when it uses
the reduced width (then `reduced` is C // r, rounded as the spec says; else
None, and r is not checked); a gate is `fn(logits) -> scales`.
"""

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

EXCITATIONS: dict[str, Callable] = {}
REDUCING: set[str] = set()   # excitations whose width depends on r
GATES: dict[str, Callable] = {}


def register(name, reduces=False):
  def wrap(fn):
    EXCITATIONS[name] = fn
    if reduces:
      REDUCING.add(name)
    return fn
  return wrap


def _dense(module, features, name, use_bias):
  # Zero-mean fan-in init keeps the gate near 0.5 at start, like a PyTorch/Caffe 1x1 conv.
  return nn.Dense(features, use_bias=use_bias, dtype=module.dtype, name=name,
                  kernel_init=nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform'))


@register('fc', reduces=True)
def fc(z, channels, reduced, spec, module):
  """The paper's excitation: FC(C -> reduced), ReLU, FC(reduced -> C) (Eq. 3)."""
  h = _dense(module, reduced, 'fc1', spec.bias)(z)
  h = nn.relu(h)
  return _dense(module, channels, 'fc2', spec.bias)(h)


@register('ese')
def ese(z, channels, reduced, spec, module):
  """Effective SE (Lee & Park, CenterMask 2020): one C -> C layer, no reduction."""
  del reduced
  return _dense(module, channels, 'fc', spec.bias)(z)


def eca_kernel_size(channels, gamma=2, b=1):
  """ECA-Net's (Wang et al. 2020) adaptive kernel: the odd integer nearest |log2(C)/gamma + b/gamma|."""
  k = int(abs((math.log2(channels) + b) / gamma))
  return k if k % 2 else k + 1


@register('eca')
def eca(z, channels, reduced, spec, module):
  """Efficient Channel Attention: a 1-D convolution across channels, kernel adapted to C."""
  del reduced, spec
  k = eca_kernel_size(channels)
  lead = z.shape[:-1]
  seq = z.reshape((-1, channels, 1))
  out = nn.Conv(1, (k,), padding=[(k // 2, k // 2)], use_bias=False, dtype=module.dtype,
                name='conv')(seq)
  return out.reshape(lead + (channels,))


@register('identity')
def identity(z, channels, reduced, spec, module):
  """No learned excitation: the gate acts on the squeezed descriptor (Gather-Excite's GE-theta-minus)."""
  del channels, reduced, spec, module
  return z


GATES.update({
    'sigmoid': jax.nn.sigmoid,
    # relu6(x + 3) / 6, the MobileNetV3 form.
    'hard_sigmoid': lambda x: jnp.clip(x + 3.0, 0.0, 6.0) / 6.0,
    'tanh': jnp.tanh,
    'relu': jax.nn.relu,
})
