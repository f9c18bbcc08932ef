"""The Caffe SE-BN-Inception's blobs, as its prototxt implies them, against our plan for them.

Source of the table below: github.com/hujie-frank/SENet, models/SE-BN-Inception.prototxt
(the official release of the paper's SE-BN-Inception). Every Inception module there has the
convolutions `<module>/1x1`, `3x3_reduce`, `3x3`, `double3x3_reduce`, `double3x3a`,
`double3x3b` and `pool_proj` (3c and 4e: no 1x1, no pool_proj; their pool branch passes the
input through), in that order of concatenation, then the SE convs `<module>_1x1_down` / `_up`.
The widths are the prototxt's `num_output`s; input widths follow from the concatenations.
"""

import jax
import jax.numpy as jnp

from se_flax.convert import caffe_names
from se_flax.models import registry

CONVS = ('1x1', '3x3_reduce', '3x3', 'double3x3_reduce', 'double3x3a', 'double3x3b', 'pool_proj')
# module: num_output of CONVS (None: absent), and of <module>_1x1_down.
PROTOTXT = {
    '3a': ((64, 64, 64, 64, 96, 96, 32), 16),
    '3b': ((64, 64, 96, 64, 96, 96, 64), 20),
    '3c': ((None, 128, 160, 64, 96, 96, None), 36),
    '4a': ((224, 64, 96, 96, 128, 128, 128), 36),
    '4b': ((192, 96, 128, 96, 128, 128, 128), 36),
    '4c': ((160, 128, 160, 128, 160, 160, 128), 38),
    '4d': ((96, 128, 192, 160, 192, 192, 128), 38),
    '4e': ((None, 128, 192, 192, 256, 256, None), 66),
    '5a': ((352, 192, 320, 160, 224, 224, 128), 64),
    '5b': ((352, 192, 320, 192, 224, 224, 128), 64),
}
# conv1/7x7_s2: 64 x 3 x 7 x 7; conv2/3x3_reduce: 64 x 64 x 1 x 1; conv2/3x3: 192 x 64 x 3 x 3.
STEM = (('conv1/7x7_s2', 64, 3, 7), ('conv2/3x3_reduce', 64, 64, 1), ('conv2/3x3', 192, 64, 3))
KERNELS = {
    '1x1': 1,
    '3x3_reduce': 1,
    '3x3': 3,
    'double3x3_reduce': 1,
    'double3x3a': 3,
    'double3x3b': 3,
    'pool_proj': 1
}
# Each conv's input: the module's input, or the conv before it in its branch.
INPUTS = {'3x3': '3x3_reduce', 'double3x3a': 'double3x3_reduce', 'double3x3b': 'double3x3a'}


def _conv_blobs(layer, out, inp, k):
  return {
      f'{layer}#0': (out, inp, k, k),
      f'{layer}/bn#0': (out,),
      f'{layer}/bn#1': (out,),
      f'{layer}/bn#2': (1,),
      f'{layer}/bn/scale#0': (out,),
      f'{layer}/bn/scale#1': (out,)
  }


def prototxt_blobs():
  blobs = {}
  for layer, out, inp, k in STEM:
    blobs.update(_conv_blobs(layer, out, inp, k))
  channels = 192
  for module, (widths, reduced) in PROTOTXT.items():
    width = dict(zip(CONVS, widths))
    for conv in CONVS:
      if width[conv] is None:
        continue
      inp = width[INPUTS[conv]] if conv in INPUTS else channels
      blobs.update(_conv_blobs(f'inception_{module}/{conv}', width[conv], inp, KERNELS[conv]))
    concat = sum(width[c] or 0 for c in ('1x1', '3x3', 'double3x3b', 'pool_proj'))
    if width['pool_proj'] is None:
      concat += channels  # the max-pool branch
    down, up = f'inception_{module}_1x1_down', f'inception_{module}_1x1_up'
    blobs.update({
        f'{down}#0': (reduced, concat, 1, 1),
        f'{down}#1': (reduced,),
        f'{up}#0': (concat, reduced, 1, 1),
        f'{up}#1': (concat,)
    })
    channels = concat
  blobs.update({'classifier#0': (1000, channels), 'classifier#1': (1000,)})
  return blobs


def test_plan_equals_the_prototxts_blobs():
  model = registry.create_model('se_bn_inception', 1000)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
  plan = caffe_names.caffe_plan(variables)
  expected = prototxt_blobs()
  assert sorted(set(plan) ^ set(expected)) == []
  assert plan == expected
  # 90 learnable layers (69 convs with BN + Scale, 20 SE convs, the classifier).
  assert len({k.split('#')[0] for k in expected if '/bn' not in k}) == 90


def test_prototxt_table_gives_the_release_parameter_count():
  # Learnable values only (BN statistics are not parameters): about 11.93M, as the release lists.
  count = sum(int(jnp.prod(jnp.array(s))) for k, s in prototxt_blobs().items() if '/bn#' not in k)
  assert round(count / 1e6, 2) == 11.93
