"""Residual units recomputed from their parameters, in the order of the paper's Fig. 5.

Convolutions go straight to `lax.conv_general_dilated`, normalisation (eval
mode) and the SE block (avg pool, FC-ReLU-FC, sigmoid) are plain numpy, so
these functions share nothing with the modules they check but the variables.
"""

import jax
import numpy as np

EPS = 1e-5


def conv(x, p, stride=1, groups=1):
  k = np.asarray(p['kernel'])
  pad = k.shape[0] // 2
  return np.asarray(
      jax.lax.conv_general_dilated(np.asarray(x, np.float32), k, (stride, stride), [(pad, pad),
                                                                                    (pad, pad)],
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                   feature_group_count=groups, precision=jax.lax.Precision.HIGHEST),
      np.float64)


def bn(x, p, s):
  return (x - s['mean']) / np.sqrt(s['var'] + EPS) * p['scale'] + p['bias']


def relu(x):
  return np.maximum(x, 0.0)


def se(x, p):
  z = x.mean(axis=(1, 2))
  h = relu(z @ p['fc1']['kernel'] + p['fc1']['bias'])
  s = 1.0 / (1.0 + np.exp(-(h @ p['fc2']['kernel'] + p['fc2']['bias'])))
  return x * s[:, None, None, :]


def combine(mode, x, branch, shortcut, gate, act):
  """Fig. 5: where the SE block (`gate`) sits relative to the branch, shortcut and add."""
  act = act or (lambda v: v)
  if mode is None:
    return act(branch(x) + shortcut(x))
  if mode == 'standard':  # Fig. 5(b): SE on the residual branch, before the add
    return act(gate(branch(x)) + shortcut(x))
  if mode == 'pre':  # Fig. 5(c): SE before the residual branch
    return act(branch(gate(x)) + shortcut(x))
  if mode == 'post':  # Fig. 5(d): SE after the add (and its ReLU)
    return gate(act(branch(x) + shortcut(x)))
  if mode == 'identity':  # Fig. 5(e): SE on the identity branch
    return act(branch(x) + gate(shortcut(x)))
  raise ValueError(mode)


def bottleneck_parts(v, *, stride=1, groups=1, stride_in_1x1=False, se_3x3=False):
  """The residual branch F and the shortcut of a Bottleneck, as functions of their input."""
  p, s = v['params'], v['batch_stats']
  s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)

  def branch(h):
    h = relu(bn(conv(h, p['conv1'], s1), p['bn1'], s['bn1']))
    h = relu(bn(conv(h, p['conv2'], s3, groups), p['bn2'], s['bn2']))
    if se_3x3:
      h = se(h, p['se'])
    return bn(conv(h, p['conv3']), p['bn3'], s['bn3'])

  def shortcut(h):
    if 'downsample_conv' not in p:
      return h
    return bn(conv(h, p['downsample_conv'], stride), p['downsample_bn'], s['downsample_bn'])

  return branch, shortcut


def bottleneck(x, v, *, mode=None, **kwargs):
  branch, shortcut = bottleneck_parts(v, **kwargs)
  return combine(mode, np.asarray(x, np.float64), branch, shortcut,
                 lambda h: se(h, v['params']['se']), relu)


def basic(x, v, *, stride=1, mode=None, se_3x3=False, shortcut_type='B', out_ch=None,
          act_before_se=False):
  p, s = v['params'], v['batch_stats']

  def branch(h):
    h = relu(bn(conv(h, p['conv1'], stride), p['bn1'], s['bn1']))
    if se_3x3:
      h = se(h, p['se'])
    h = bn(conv(h, p['conv2']), p['bn2'], s['bn2'])
    # The Caffe SE-ResNet-18/34 (timm's legacy SEResNetBlock) apply a ReLU here as well.
    return relu(h) if act_before_se else h

  def shortcut(h):
    if 'downsample_conv' in p:
      return bn(conv(h, p['downsample_conv'], stride), p['downsample_bn'], s['downsample_bn'])
    if shortcut_type == 'A' and (stride != 1 or h.shape[-1] != out_ch):
      # He et al. 2016 option A: take every other pixel, pad the new channels with zeros.
      y = h[:, ::stride, ::stride, :]
      extra = out_ch - h.shape[-1]
      return np.concatenate(
          [np.zeros(y.shape[:3] + (extra // 2,)), y,
           np.zeros(y.shape[:3] + (extra - extra // 2,))], axis=-1)
    return h

  return combine(mode, np.asarray(x, np.float64), branch, shortcut, lambda h: se(h, p['se']), relu)


def preact(x, v, *, stride=1, bottleneck_unit=False, mode=None, se_3x3=False):
  """He et al. 2016b: BN-ReLU before each conv; the branch and a projection see BN-ReLU(x)."""
  p, s = v['params'], v['batch_stats']
  x = np.asarray(x, np.float64)
  pre = relu(bn(x, p['bn1'], s['bn1']))

  def branch(h):
    if bottleneck_unit:
      h = conv(h, p['conv1'])
      h = conv(relu(bn(h, p['bn2'], s['bn2'])), p['conv2'], stride)
      if se_3x3:
        h = se(h, p['se'])
      return conv(relu(bn(h, p['bn3'], s['bn3'])), p['conv3'])
    h = conv(h, p['conv1'], stride)
    if se_3x3:
      h = se(h, p['se'])
    return conv(relu(bn(h, p['bn2'], s['bn2'])), p['conv2'])

  def shortcut(_):
    return conv(pre, p['downsample_conv'], stride) if 'downsample_conv' in p else x

  return combine(mode, pre, branch, shortcut, lambda h: se(h, p['se']), None)
