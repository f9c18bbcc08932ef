"""Excitations z -> pre-gate logits, and the gates that turn them into scales.

Section 3.2: the excitation is a bottleneck of two fully connected layers
(C -> C/r -> C) with a ReLU between, followed by a gate (sigmoid in the paper;
Table 12 compares ReLU and tanh). The layers act on the last axis only, so on a
spatial descriptor (gather, NoSqueeze) they are exactly 1x1 convolutions.

An excitation is `fn(z, channels, reduced, spec, module) -> logits` with
`logits.shape[-1] == channels`, registered with `reduces=True` when it uses
the reduced width (then `reduced` is C // r, rounded as the spec says; else
None, and r is not checked); a gate is `fn(logits) -> scales`.

`module` is the calling SE block, Linen (`layers.se.SEBlock`) or NNX
(`layers.se.SEBlockNNX`): an excitation makes its layers with `dense` and
`conv1d` below, which build a Linen or an NNX layer as the block is, so each
operator is written once for both APIs.

Identity start (`SEBlock(identity_start=True)`, for SE blocks put into a
trained network): an excitation registered with `zero_start=True` makes its
last layer with `last=True`, which then starts at zero, so its logits are 0
for every input; the block then applies the gate's identity form
(`IDENTITY_GATES`), which is 1 at 0 with a non-zero slope, so the block
starts as the identity and still learns from the first step.
"""

import math
from typing import Callable

from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp

EXCITATIONS: dict[str, Callable] = {}
REDUCING: set[str] = set()  # excitations whose width depends on r
ZERO_START: set[str] = set()  # excitations whose logits start at zero under identity start
GATES: dict[str, Callable] = {}

# Zero-mean fan-in init keeps the gate near 0.5 at start, like a PyTorch/Caffe 1x1 conv.
FC_INIT = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')
# ECA's convolution keeps Linen's default kernel init.
ECA_INIT = nn.initializers.lecun_normal()


def register(name, reduces=False, zero_start=False):

  def wrap(fn):
    EXCITATIONS[name] = fn
    if reduces:
      REDUCING.add(name)
    if zero_start:
      ZERO_START.add(name)
    return fn

  return wrap


def _starts_at_zero(module, last):
  return last and getattr(module, 'identity_start', False)


def dense(module, features, name, use_bias, kernel_init=FC_INIT, last=False):
  """A layer on the last axis, z (..., K) -> (..., features), named `name` in `module`.

  `last`: the excitation's last layer, zero at the start of an identity-start block.
  """
  if _starts_at_zero(module, last):
    kernel_init = nn.initializers.zeros
  if isinstance(module, nn.Module):
    return nn.Dense(features, use_bias=use_bias, dtype=module.dtype, name=name,
                    kernel_init=kernel_init, bias_init=nn.initializers.zeros)
  return lambda z: module.layer(
      name, lambda rngs: nnx.Linear(z.shape[
          -1], features, use_bias=use_bias, dtype=module.dtype, param_dtype=jnp.float32, kernel_init
                                    =kernel_init, bias_init=nn.initializers.zeros, rngs=rngs))(z)


def conv1d(module, kernel_size, name, kernel_init=ECA_INIT, last=False):
  """A one-channel convolution along axis 1 of (B, L, 1), zero-padded to length L, without bias."""
  if _starts_at_zero(module, last):
    kernel_init = nn.initializers.zeros
  pad = [(kernel_size // 2, kernel_size // 2)]
  if isinstance(module, nn.Module):
    return nn.Conv(1, (kernel_size,), padding=pad, use_bias=False, dtype=module.dtype,
                   kernel_init=kernel_init, name=name)
  return lambda seq: module.layer(
      name, lambda rngs: nnx.Conv(1, 1,
                                  (kernel_size,), padding=pad, use_bias=False, dtype=module.dtype,
                                  param_dtype=jnp.float32, kernel_init=kernel_init, rngs=rngs))(seq)


@register('fc', reduces=True, zero_start=True)
def fc(z, channels, reduced, spec, module):
  """The paper's excitation: FC(C -> reduced), ReLU, FC(reduced -> C) (Eq. 3)."""
  h = dense(module, reduced, 'fc1', spec.bias)(z)
  h = nn.relu(h)
  return dense(module, channels, 'fc2', spec.bias, last=True)(h)


@register('ese', zero_start=True)
def ese(z, channels, reduced, spec, module):
  """Effective SE (Lee & Park, CenterMask 2020): one C -> C layer, no reduction."""
  del reduced
  return dense(module, channels, 'fc', spec.bias, last=True)(z)


def eca_kernel_size(channels, gamma=2, b=1):
  """ECA-Net's (Wang et al. 2020) adaptive kernel: the odd integer nearest |log2(C)/gamma + b/gamma|."""
  k = int(abs((math.log2(channels) + b) / gamma))
  return k if k % 2 else k + 1


@register('eca', zero_start=True)
def eca(z, channels, reduced, spec, module):
  """Efficient Channel Attention: a 1-D convolution across channels, kernel adapted to C."""
  del reduced, spec
  k = eca_kernel_size(channels)
  lead = z.shape[:-1]
  seq = z.reshape((-1, channels, 1))
  out = conv1d(module, k, 'conv', last=True)(seq)
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

# Each gate's identity form g_id: g_id(0) = 1 and g_id'(0) > 0, for blocks whose logits start
# at 0. Sigmoid and hard sigmoid are taken relative to their value at 0 (twice the gate, range
# (0, 2)); tanh, 0 at 0, is shifted by one (range (0, 2)); ReLU, flat at 0, is read one unit
# to the right, which is the plain ReLU gate with the last layer's bias started at 1.
IDENTITY_GATES: dict[str, Callable] = {
    'sigmoid': lambda x: 2.0 * jax.nn.sigmoid(x),
    'hard_sigmoid': lambda x: jnp.clip(x + 3.0, 0.0, 6.0) / 3.0,
    'tanh': lambda x: 1.0 + jnp.tanh(x),
    'relu': lambda x: jax.nn.relu(x + 1.0),
}
