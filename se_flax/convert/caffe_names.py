"""The official Caffe SE-BN-Inception's layer names, planned onto our `se_bn_inception`.

Release: github.com/hujie-frank/SENet, models/SE-BN-Inception.prototxt. Its
convolutions have no bias; each is followed by a `BatchNorm` layer
(`<conv>/bn`: mean, variance, moving-average factor) and a `Scale` layer
(`<conv>/bn/scale`: gamma, beta). Modules are `inception_3a` .. `inception_5b`;
their SE blocks are `inception_3a_1x1_down` / `_1x1_up`, 1x1 convs with bias
on the pooled concatenation; the classifier is `classifier`.

A blob is named `<layer>#<index>`, as pycaffe's `net.params[layer][index]`.
`caffe_plan` lists every blob our model's variables take, with its Caffe
shape, so that an importer of the release's .caffemodel can be checked
against the plan before reading any data.
"""

from typing import Dict, Tuple

from flax import traverse_util

MODULES = ('3a', '3b', '3c', '4a', '4b', '4c', '4d', '4e', '5a', '5b')
STEM = {'conv1': 'conv1/7x7_s2', 'conv2_reduce': 'conv2/3x3_reduce', 'conv2': 'conv2/3x3'}
# Our branch{b}_{k} -> the conv's name in a module; 3c and 4e have neither 1x1 nor pool branch.
_BRANCHES = {
    'branch0_0': '1x1',
    'branch1_0': '3x3_reduce',
    'branch1_1': '3x3',
    'branch2_0': 'double3x3_reduce',
    'branch2_1': 'double3x3a',
    'branch2_2': 'double3x3b',
    'branch3_1': 'pool_proj'
}
_REDUCTION_BRANCHES = {
    'branch0_0': '3x3_reduce',
    'branch0_1': '3x3',
    'branch1_0': 'double3x3_reduce',
    'branch1_1': 'double3x3a',
    'branch1_2': 'double3x3b'
}
_REDUCTIONS = ('3c', '4e')
_STAGE_STARTS = {1: 0, 2: 3, 3: 8}  # index in MODULES of each stage's first module


def layer_name(path: Tuple[str, ...]) -> str:
  """The Caffe layer a module of ours (its path without the leaf) comes from."""
  head = path[0]
  if head in STEM:
    return STEM[head]
  if head == 'fc':
    return 'classifier'
  stage, j = (int(v) for v in head[len('layer'):].split('_'))
  module = MODULES[_STAGE_STARTS[stage] + j]
  if path[1] == 'se':
    return f'inception_{module}_1x1_{"down" if path[2] == "fc1" else "up"}'
  names = _REDUCTION_BRANCHES if module in _REDUCTIONS else _BRANCHES
  return f'inception_{module}/{names[path[1]]}'


def caffe_plan(abstract_variables) -> Dict[str, tuple]:
  """{'<layer>#<index>': Caffe shape} of every blob `abstract_variables` (shapes suffice) takes."""
  params = traverse_util.flatten_dict(dict(abstract_variables['params']))
  plan = {}
  for path, value in params.items():
    shape, leaf = tuple(value.shape), path[-1]
    if path[-2] == 'bn':
      layer = layer_name(path[:-2])
      if leaf == 'scale':
        # Caffe's BatchNorm blobs are the statistics and the factor they are scaled by.
        plan.update({
            f'{layer}/bn#0': shape,
            f'{layer}/bn#1': shape,
            f'{layer}/bn#2': (1,),
            f'{layer}/bn/scale#0': shape
        })
      else:
        plan[f'{layer}/bn/scale#1'] = shape
      continue
    module = path[:-2] if path[-2] == 'conv' else path[:-1]
    layer = layer_name(module)
    if leaf == 'bias':
      plan[f'{layer}#1'] = shape
    elif len(shape) == 4:
      plan[f'{layer}#0'] = (shape[3], shape[2], shape[0], shape[1])
    else:
      # Dense (in, out): the classifier's InnerProduct, or an SE 1x1 conv on a 1x1 map.
      plan[f'{layer}#0'] = (shape[1], shape[0]) + (() if layer == 'classifier' else (1, 1))
  return plan
