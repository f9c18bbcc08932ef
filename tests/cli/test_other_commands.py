"""The other command lines: weight import, data preparation, the sweep runner; analysis file names.

Each bad input ends in one `error:` line on stderr, without a traceback.
"""

import os
import socket
import subprocess
import sys

import numpy as np
from safetensors.numpy import save_file

from experiments import runs
from experiments import sweep
from se_flax import errors
from se_flax.analysis import excitation
from se_flax.analysis import gates as gates_lib
from tests.cli.test_bad_command_lines import _error_lines
from tests.integration import harness


def _run_module(module, *args, env_extra=None):
  env = harness.env(devices=1, **(env_extra or {}))
  proc = subprocess.run([sys.executable, '-m', module, *args], cwd=harness.REPO, env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  return proc.returncode, proc.stdout, proc.stderr


def _convert(weights, out):
  return _run_module('se_flax.convert', '--timm_name=seresnet50', f'--weights={weights}',
                     f'--out={out}')


def _truncated_safetensors(path):
  save_file({'conv1.weight': np.ones((64, 3, 7, 7), np.float32)}, str(path))
  os.truncate(path, os.path.getsize(path) // 2)


def test_convert_of_unreadable_safetensors_is_one_line(tmp_path):
  empty = tmp_path / 'empty.safetensors'
  empty.write_bytes(b'')
  garbage = tmp_path / 'garbage.safetensors'
  garbage.write_bytes(np.random.RandomState(0).bytes(100))
  cut = tmp_path / 'cut.safetensors'
  _truncated_safetensors(cut)
  expected = {
      empty: 'is empty (0 bytes)',
      garbage: 'not a readable safetensors file',
      cut: 'not a readable safetensors file'
  }
  for weights, words in expected.items():
    out = tmp_path / f'out_{weights.stem}'
    code, _, err = _convert(weights, out)
    lines = _error_lines(err)
    assert code == 1 and 'Traceback' not in err, err
    assert len(lines) == 1 and lines[0].startswith('error: ') and words in lines[0], err
    assert str(weights) in lines[0] and not out.exists()


def _closed_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_prepare_of_a_download_without_network_fails_before_downloading(tmp_path):
  port = _closed_port()
  code, _, err = _run_module('se_flax.data.prepare', '--dataset=cifar10', f'--data_dir={tmp_path}',
                             env_extra={'SE_FLAX_DOWNLOAD_PROBE': f'127.0.0.1:{port}'})
  lines = _error_lines(err)
  assert code == errors.EXIT_CONFIG_ERROR and 'Traceback' not in err, err
  assert len(lines) == 1 and f'cannot reach 127.0.0.1:{port}' in lines[0], err
  assert 'machine with network access' in lines[0]
  assert not list(tmp_path.rglob('*.tfrecord*')) and not (tmp_path / 'downloads').exists()


def test_sweep_header_shows_the_epochs_set_on_the_command_line():
  lines = []
  code = sweep.main([
      'experiments/reduction_ratio.py', '--dataset=digits', '--root=/nonexistent',
      '--launcher=print', '--set=num_epochs=2'
  ], say=lines.append)
  assert code == 0
  header = lines[0].splitlines()[0]
  assert '2 epochs' in header and '15 epochs' not in header, header
  assert 'set for every run: num_epochs=2' in header
  plan = runs.plan('experiments/reduction_ratio.py', '/nonexistent', 'digits',
                   extra={'num_epochs': 2}, validate=False)
  # The manifest, and so the report, carry the same line.
  assert '2 epochs' in plan.about and '15 epochs' not in plan.about


def test_sweep_errors_go_to_stderr(capsys):
  code = sweep.main([
      'experiments/reduction_ratio.py', '--dataset=digits', '--root=/nonexistent',
      '--launcher=print', '--only=no_such_run'
  ])
  assert code == 2
  captured = capsys.readouterr()
  assert 'error:' not in captured.out
  assert captured.err.startswith('error: --only names unknown runs')


def test_analysis_files_count_stages_from_zero(tmp_path):
  rng = np.random.RandomState(0)
  stats = gates_lib.GateStats(classes=(0, 1))
  # Module layer1 holds stage 0 (config.model.se.stages counts from 0).
  stats.add({
      'layer1_0': rng.rand(6, 4),
      'layer2_0': rng.rand(6, 4),
      'layer3_1': rng.rand(6, 8)
  }, np.array([0, 1, 0, 1, 0, 1]), np.ones(6))
  excitation.write_outputs(stats, str(tmp_path))
  assert sorted(
      p.name for p in tmp_path.glob('stage*.png')) == ['stage0.png', 'stage1.png', 'stage2.png']
