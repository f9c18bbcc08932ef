"""--mode=compile: the training step compiled by libtpu for a TPU slice, checked against counts.

The network is the smallest that takes the whole path (SE-ResNet-20 for CIFAR on
the 8x8 digits, 8 images on v5p-8's 4 chips, 2 per chip): one compile of the
train and eval steps, about 20 s on one core. Each figure of the report is
compared with a count made without the compiler:

- FLOPs: the eval step's against 2 x the convolutions' and dense layers'
  multiply-accumulates on the pixels their windows cover (at 8x8 most 3x3
  windows overlap the zero padding, which XLA does not count; the model
  summary's MACs count every tap); the train step's against 6 x the
  summary's MACs (forward, and two products per layer backward);
- the gradient all-reduce: 4 bytes per parameter, plus the BatchNorm
  statistics' reductions (2 per channel forward, 2 backward) and the metrics;
- HBM arguments: at least the bytes of the train state and of a device's batch, at most 3x
  (TPU tiles pad the narrow channel dimensions of this small network).
"""

import dataclasses
import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from se_flax import cli
from se_flax import errors
from se_flax import models
from se_flax.models import summary
from se_flax.train import aot
from se_flax.train import parallel
from tests.integration import harness

# One worker compiles once for the whole module.
pytestmark = pytest.mark.xdist_group('test_aot')

SLICE = 'v5p-8'
BATCH = 8


def _config():
  config = digits.get_config('model=se_cifar_resnet20,batch=8')
  config.eval_batch_size = BATCH
  return config


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  """The JSON report of `main.py --mode=compile`, and the CompileReport it came from."""
  workdir = tmp_path_factory.mktemp('compile')
  made = []

  def keep(*args, **kwargs):
    made.append(compile_for_slice(*args, **kwargs))
    return made[-1]

  programs = []

  def split(hlo_text):
    programs.append(hlo_text)
    return cycle_split(hlo_text)

  compile_for_slice, cycle_split = aot.compile_for_slice, aot.cycle_split
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(aot, 'compile_for_slice', keep)
    patch.setattr(aot, 'cycle_split', split)
    assert cli.run('compile', _config(), str(workdir), topology=SLICE,
                   search_batch=False) == errors.EXIT_OK
  made[0].hlo = programs[0]  # the train step's optimized program
  return json.loads((workdir / f'compile_{SLICE}.json').read_text()), made[0]


@pytest.fixture(scope='module')
def report(compiled):
  return compiled[0]


def _window_taps(n_in, n_out, kernel, stride, pad_low):
  """(output position, kernel tap) pairs of one spatial axis that land inside the input."""
  return sum(1 for o in range(n_out) for t in range(kernel) if 0 <= o * stride + t - pad_low < n_in)


def _covered_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      lhs, rhs, out = eqn.invars[0].aval, eqn.invars[1].aval, eqn.outvars[0].aval
      dn = eqn.params['dimension_numbers']
      taps = np.prod([
          _window_taps(lhs.shape[dn.lhs_spec[2 + i]], out.shape[dn.out_spec[2 + i]],
                       rhs.shape[dn.rhs_spec[2 + i]], eqn.params['window_strides'][i],
                       eqn.params['padding'][i][0]) for i in range(len(dn.rhs_spec) - 2)
      ])
      total += (int(taps) * rhs.shape[dn.rhs_spec[1]] * out.shape[dn.out_spec[1]] *
                out.shape[dn.out_spec[0]])
    elif eqn.primitive.name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      total += int(np.prod(eqn.outvars[0].aval.shape)) * int(
          np.prod([eqn.invars[0].aval.shape[d] for d in contract]))
  return total


@pytest.fixture(scope='module')
def network():
  config = _config()
  model = models.from_config(config, 10)
  x = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)
  variables = jax.eval_shape(lambda v: model.init(jax.random.PRNGKey(0), v, train=False), x)
  jaxpr = jax.make_jaxpr(lambda v, xx: model.apply(v, xx, train=False))(variables, x).jaxpr
  bn_channels = sum(leaf.shape[-1]
                    for path, leaf in jax.tree_util.tree_leaves_with_path(variables['batch_stats'])
                    if 'mean' in jax.tree_util.keystr(path))
  return {
      'macs':
          summary.macs_of(model, (8, 8, 1)),
      'covered_macs':
          _covered_macs(jaxpr),
      'params':
          summary.count_params(variables['params']),
      'bn_channels':
          bn_channels,
      # The channels each SE block rescales: its excitation's output width.
      'se_channels':
          sum(leaf.shape[-1]
              for path, leaf in jax.tree_util.tree_leaves_with_path(variables['params'])
              if "'se'" in jax.tree_util.keystr(path) and "'fc2'" in jax.tree_util.keystr(path)
              and 'kernel' in jax.tree_util.keystr(path))
  }


def test_slice_names_map_to_topologies():
  # v4 and v5p count TensorCores, two a chip; v5e and v6e count chips.
  assert aot.topology('v5p-8').topology == 'v5p:2x2x1'
  assert aot.topology('v4-32').chips == 16
  assert aot.topology('v5p-512').topology == 'v5p:4x8x8'
  assert aot.topology('v5e-8').topology == 'v5e:2x4'
  assert aot.topology('v6e-256').chips == 256
  for name in ('v5p-7', 'v5e-2', 'v5e-1', 'v3-8', 'tpu'):
    with pytest.raises(errors.ConfigError, match='known: v4-8, '):
      aot.topology(name)


def test_collectives_parsed_from_hlo():
  hlo = ('  %ar = f32[10,4]{1,0} all-reduce(f32[10,4]{1,0} %p), replica_groups={}\n'
         '  %ars = (f32[3]{0}, bf16[2,2]{1,0}) all-reduce-start(f32[3]{0} %a, bf16[2,2] %b)\n'
         '  ROOT %ag = (f32[2]{0}, f32[8]{0}) all-gather-start(f32[2]{0} %c), dimensions={0}\n'
         '  %f = f32[3]{0} fusion(f32[3]{0} %all-reduce), kind=kLoop\n')
  assert aot.collectives(hlo) == {
      'all-reduce': {
          'count': 2,
          'bytes': 160 + 12 + 8
      },
      'all-gather': {
          'count': 1,
          'bytes': 32
      }
  }


def test_train_flops_match_the_mac_count(report, network):
  train = report['train']
  # The train step's FLOPs per image are 0.85 to 1.05 x 6 x the MACs: the backward products
  # skip the padded taps too, and the first layer has no input gradient.
  ratio = train['flops_per_image'] / (6 * network['macs'])
  assert 0.85 < ratio < 1.05, ratio
  # Evaluation is one forward pass: 2 FLOPs per covered MAC, plus BN, ReLU and the loss.
  ratio = report['eval']['flops_per_image'] / (2 * network['covered_macs'])
  assert 1.0 <= ratio < 1.05, ratio
  assert train['flops_per_chip'] == pytest.approx(train['flops_per_image'] * BATCH / 4)


def test_gradient_all_reduce_carries_every_parameter_once(report, network):
  collectives = report['train']['collectives_per_device']
  # Data parallelism replicates the state: no all-gather, no reduce-scatter.
  assert set(collectives) == {'all-reduce'}, collectives
  gradients = 4 * network['params']
  bn = 4 * 4 * network['bn_channels']  # mean and mean square, forward and backward, float32
  # The squeeze taken from the statistics of the BatchNorm before each SE block (layers/norm.py)
  # sends that BatchNorm's gradient through the batch mean once more: one float32 per channel.
  squeeze = 4 * network['se_channels']
  extra = collectives['all-reduce']['bytes'] - gradients - bn - squeeze
  assert network['se_channels'] == 3 * (16 + 32 + 64)
  assert 0 <= extra <= 64, (collectives, gradients, bn, squeeze)  # the metrics' scalars


def test_hbm_arguments_are_the_state_and_a_device_batch(report, network):
  # SGD with momentum: params, momentum, batch_stats (mean, var); the step and the key.
  state = 4 * (2 * network['params'] + 2 * network['bn_channels']) + 4 + 8
  batch = (BATCH // 4) * (8 * 8 * 1 + 4)  # uint8 pixels, int32 labels
  train = report['train']
  # TPU layouts pad the minor dimensions of each array to whole tiles (128 lanes): with 16 to
  # 64 channels most of them are padding here (2.70x); never less than the arrays' own bytes.
  assert state + batch <= train['argument_bytes_per_chip'] < 3 * (state + batch)
  assert train['hbm_bytes_per_chip'] < report['hbm_per_chip_bytes'] and report['fits']
  assert 0 < train['modelled_step_seconds'] < 1
  assert train['images_per_second_per_slice'] == pytest.approx(4 *
                                                               train['images_per_second_per_chip'])
  assert 0 < train['mfu'] < 1


def _instructions(hlo_text):
  """(op name or None, estimated cycles) of each instruction, from its backend_config JSON."""
  found = []
  for line in hlo_text.splitlines():
    config = re.search(r'backend_config=(\{.*\})(?:, |$)', line)
    if not config:
      continue
    try:
      cycles = json.loads(config.group(1)).get('window_config', {}).get('estimated_cycles')
    except json.JSONDecodeError:
      continue
    if cycles is not None:
      name = re.search(r'op_name="([^"]*)"', line)
      found.append((name.group(1) if name else None, int(cycles)))
  return found


def test_cycle_split_covers_every_instruction_and_names_the_se_operations(report, compiled):
  instructions = _instructions(compiled[1].hlo)
  split = compiled[1].train.cycles
  # Every estimate the compiler gave is counted once.
  assert sum(sum(v.values()) for v in split.values()) == sum(c for _, c in instructions)
  # The SE parts are the instructions made under the blocks' `se` scope, no more, no fewer.
  se = sum(c for name, c in instructions if name and '/se/' in name)
  assert se > 0 and sum(sum(v.values()) for k, v in split.items() if k.startswith('SE ')) == se
  # The excitation roots instructions of its own; the scale may not (an operation fused into
  # another's instruction counts to that one's root: the residual sum, BatchNorm's backward). The
  # squeeze roots none: it is taken from the BatchNorm statistics' reduction before the block.
  assert sum(split['SE excitation'].values()) > 0, split
  assert 'SE squeeze' not in split, split
  shares = report['train']['cycle_share_percent']
  assert sum(v for k, v in shares.items() if k != 'SE') == pytest.approx(100, abs=0.1)
  assert 0 < shares['SE'] < 50 and shares['convolution'] > 0


@pytest.mark.parametrize('op_name, part', [
    ('jit(train_step)/transpose(jvp(CifarResNet))/CifarResNet.stages/layer2_2/'
     'layer2_2.combine/conv1/conv_general_dilated', ('backward', 'convolution')),
    ('jit(train_step)/jvp(CifarResNet)/CifarResNet.stages/layer1_0/layer1_0.combine/bn2/mul',
     ('forward', 'batchnorm')),
    ('jit(train_step)/transpose(jvp(CifarResNet))/CifarResNet.head/fc/dot_general',
     ('backward', 'other layers')),
    ('jit(train_step)/jvp(ResNet)/ResNet.stages/stage3_block2/stage3_block2.combine/se/'
     'excitation/fc1/dot_general', ('forward', 'SE excitation')),
    ('jit(train_step)/jvp(ResNet)/ResNet.stages/b/b.combine/se/reduce_sum',
     ('forward', 'SE squeeze')),
    ('jit(train_step)/reduce_and', ('update', 'finiteness check')),
    ('jit(train_step)/jit(_where)/select_n', ('update', 'optimizer')),
    ('jit(train_step)/jvp(jit(log_softmax))/reduce_sum', ('forward', 'loss and metrics')),
])
def test_op_names_of_compiled_programs_map_to_parts(op_name, part):
  assert aot._part(op_name) == part  # pylint: disable=protected-access


def test_unknown_topology_is_one_error_line(tmp_path):
  proc = subprocess.run([
      sys.executable,
      str(harness.REPO / 'main.py'), '--config=configs/digits.py', '--mode=compile',
      '--topology=v5p-7', f'--workdir={tmp_path}'
  ], cwd=harness.REPO, env=harness.env(devices=1), capture_output=True, text=True, timeout=120,
                        check=False)
  assert proc.returncode == errors.EXIT_CONFIG_ERROR
  lines = [l for l in proc.stderr.splitlines() if re.match(r'error:', l)]
  assert len(lines) == 1 and 'v5p-8' in lines[0] and 'v5p-7' in lines[0], proc.stderr


def test_a_step_that_does_not_fit_is_one_error_line_after_the_report(compiled, tmp_path,
                                                                     monkeypatch, capsys):
  # The same compiled program, on a chip of 1 MB.
  small = dataclasses.replace(compiled[1].slice.generation, hbm_bytes=1 << 20)
  report = dataclasses.replace(compiled[1], slice=dataclasses.replace(compiled[1].slice,
                                                                      generation=small))
  monkeypatch.setattr(aot, 'compile_for_slice', lambda *args, **kwargs: report)
  assert cli.run('compile', _config(), str(tmp_path), topology=SLICE,
                 search_batch=False) == errors.EXIT_CONFIG_ERROR
  out, err = capsys.readouterr()
  assert 'DOES NOT FIT' in out
  lines = [l for l in err.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and 'does not fit in v5p-8' in lines[0], err
  assert not json.loads((tmp_path / f'compile_{SLICE}.json').read_text())['fits']


def test_the_largest_batch_is_the_compilers_boundary(compiled):
  report = compiled[1]
  mesh = aot.slice_mesh(aot.slice_devices(report.slice))
  # A chip 1% larger than the config's own step (2 images per device) needs: the boundary is
  # a few images away, so the search ends on adjacent batches after a few small compiles.
  capacity = int(1.01 * report.train.hbm_bytes)
  found = aot.search_largest_batch(_config(), mesh, report.slice, report.train, capacity)
  best, over = found['images_per_device'], found['smallest_over']
  compiled_hbm = {int(b): m for b, m in found['compiled'].items()}
  # Both sides were compiled: `best` fits, one image more per device does not.
  assert best >= report.train.batch_per_device and over == best + 1, found
  assert compiled_hbm.get(best, report.train.hbm_bytes) <= capacity < compiled_hbm[over], found
  assert found['compiles'] <= 6


def test_a_program_the_compiler_cannot_fit_is_a_config_error():
  tpu_slice = aot.topology('v5e-4')
  mesh = aot.slice_mesh(aot.slice_devices(tpu_slice))
  # A 10 GB float32 matrix, its product and its transpose: more than a v5e chip's 16 GiB.
  x = jax.ShapeDtypeStruct((50_000, 50_000), jnp.float32, sharding=parallel.replicated(mesh))
  lowered = jax.jit(lambda a: a @ a + a.T).lower(x)
  with pytest.raises(errors.ConfigError, match=r'^the product does not fit in v5e-4: '
                     'RESOURCE_EXHAUSTED'):
    aot.compile_lowered(lowered, 'the product', tpu_slice)
