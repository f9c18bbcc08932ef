"""VGG-16 with batch normalisation after every convolution, and its SE twin (paper Table 2).

Section 3.3 integrates SE into a network without residual units by treating
each convolution as the transformation it wraps: conv -> BN -> ReLU -> SE.
The layout and parameter count (138,365,992) follow torchvision's `vgg16_bn`:
3x3 convs with biases, 2x2 max-pools between the five stages, an adaptive
average pool to 7x7 and a 25088-4096-4096-1000 classifier with dropout 0.5.

Stages (`SESpec.stages`): the five groups of convolutions between max-pools,
0..4, at 224, 112, 56, 28 and 14 pixels for a 224 input. Unit `layer{s}_{j}`
is the j-th conv of stage s (1-based s, as the ResNets name theirs), so gates
and summaries read the same way; its SE block is `layer{s}_{j}/se`.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from se_flax.models.backbone import Backbone
from se_flax.models.blocks import conv_padded
from se_flax.models.unit import Unit

VGG16_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def adaptive_avg_pool(x, size: int):
  """PyTorch's AdaptiveAvgPool2d: cell i covers rows floor(i H / size) to ceil((i + 1) H / size)."""
  h, w = x.shape[1:3]
  if (h, w) == (size, size):
    return x

  def cells(n):
    return [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]

  rows = [
      jnp.stack([jnp.mean(x[:, r0:r1, c0:c1], axis=(1, 2))
                 for c0, c1 in cells(w)], axis=1)
      for r0, r1 in cells(h)
  ]
  return jnp.stack(rows, axis=1)


class ConvUnit(Unit):
  """conv -> BN -> act -> SE (section 3.3: SE after the non-linearity that follows the conv).

  The shared fields are Unit's.
  """
  features: int

  @nn.compact
  def __call__(self, x):
    # torchvision's vgg16_bn keeps the conv biases in front of BN; the count follows it.
    conv = functools.partial(self.conv, use_bias=True)
    x = conv_padded(conv, self.features, 3, name='conv')(x)
    return self.se_block(self.act(self.norm(name='bn')(x)), self.se)


class VGG(Backbone):
  """VGG with BN (the shared fields are Backbone's; zero_init_residual has no unit to act on).

  Attributes:
    widths: each stage's conv widths (VGG16_WIDTHS for VGG-16).
    classifier_width: width of the two hidden classifier layers (4096).
    pool_size: side of the adaptive average pool before the classifier (7).
    dropout: dropout rate after each hidden classifier layer (0.5).
  """
  title = 'VGG'
  se_integrations = ('standard',)
  se_positions = ('last',)

  widths: Sequence[Sequence[int]] = VGG16_WIDTHS
  classifier_width: int = 4096
  pool_size: int = 7
  dropout: float = 0.5

  def min_input(self) -> int:
    return 2 ** len(self.widths)  # every stage halves the map

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = self.stages(self.inputs(x), train, self.widths,
                    lambda h, place: ConvUnit(place.description, **place.fields)(h),
                    downsample_from=None,
                    after_stage=lambda h, _: nn.max_pool(h, (2, 2), strides=(2, 2)))

    x = adaptive_avg_pool(x, self.pool_size).astype(jnp.float32)
    # Flattened (H, W, C); torchvision flattens (C, H, W): imported fc1 kernels need a permutation.
    x = x.reshape((x.shape[0], -1))
    # The classifier runs in float32, as the ResNets' does.
    for k in range(2):
      x = nn.relu(nn.Dense(self.classifier_width, dtype=jnp.float32, name=f'fc{k + 1}')(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=jnp.float32, name='fc')(x)
