"""No user path goes through os.path.abspath: URLs reach the code that uses them unchanged."""

import os

import pytest

from se_flax import cli
from se_flax import paths

URL = 'gs://my-bucket/se50'


@pytest.fixture
def abspath_calls(monkeypatch):
  """The arguments of every os.path.abspath call (which would make a URL <cwd>/gs:/...)."""
  calls, real = [], os.path.abspath

  def recording(path):
    calls.append(os.fspath(path))
    return real(path)

  monkeypatch.setattr(os.path, 'abspath', recording)
  return calls


def test_cli_passes_a_gs_workdir_unchanged(abspath_calls, monkeypatch):
  from se_flax import check  # pylint: disable=g-import-not-at-top
  from se_flax.train import parallel  # pylint: disable=g-import-not-at-top
  seen = {}
  monkeypatch.setattr(check, 'check_config', lambda config: None)
  monkeypatch.setattr(parallel, 'maybe_initialize_distributed', lambda *args: None)

  def dispatch(mode, config, workdir, step, *unused):
    seen['workdir'] = workdir
    return 0

  monkeypatch.setattr(cli, '_dispatch', dispatch)
  assert cli.run('train', object(), URL) == 0
  assert seen['workdir'] == URL
  assert not [c for c in abspath_calls if 'my-bucket' in c or 'gs:' in c]


def test_local_paths_become_absolute_and_urls_stay(abspath_calls, monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert paths.resolve_str('runs/a') == f'{tmp_path}/runs/a'
  assert paths.resolve_str('~/b') == f'{tmp_path}/home/b'
  assert paths.resolve_str(URL) == URL
  assert paths.resolve_str('s3://b/k') == 's3://b/k'
  assert not [c for c in abspath_calls if '://' in c or 'gs:' in c]


def test_sweep_plans_workdirs_under_a_gs_root(abspath_calls):
  from experiments import sweep  # pylint: disable=g-import-not-at-top
  out = []
  code = sweep.main([
      'experiments/reduction_ratio.py', '--dataset=digits', '--root=gs://my-bucket/sweeps/rr',
      '--launcher=print'
  ], say=out.append)
  assert code == 0, out
  commands = [line for line in '\n'.join(out).splitlines() if 'main.py' in line]
  assert commands and all('--workdir=gs://my-bucket/sweeps/rr/' in c for c in commands)
  assert not [c for c in abspath_calls if 'my-bucket' in c or 'gs:' in c]
