"""`python -m se_flax.data.prepare` with gs:// directories, under etils' epath mock.

TensorFlow's gs:// file system, which tfds writes and reads data sets with,
cannot be pointed at an emulator (docs/multihost.md, "Object stores"), so
this layer is tested with etils' own testing mock: the URLs reach epath and
tfds unchanged, nothing local is created for them.
"""

import types

from etils import epath
from etils.epath import gpath
from etils.epath import testing as epath_testing
import pytest

from se_flax.data import prepare


@pytest.fixture
def store(monkeypatch):
  """The gs:// objects and folders epath was asked about or asked to make, in a dict."""
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)  # route gs:// through the mock
  made, files = [], {}
  mocks = dict(
      mkdir=lambda _, path, *args, **kwargs: made.append(str(path)),
      makedirs=lambda _, path, *args, **kwargs: made.append(str(path)),
      exists=lambda _, path: str(path) in files or any(str(p) == str(path) for p in made),
      isdir=lambda _, path: str(path) in made,
  )
  with epath_testing.mock_epath(**mocks):
    yield types.SimpleNamespace(made=made, files=files)


class _Builder:

  def __init__(self, name, data_dir):
    self.name, self.data_dir = name, f'{data_dir}/{name}/1.0.0'
    self.info = types.SimpleNamespace(homepage='', splits={})

  def is_prepared(self):
    return True


def test_a_gs_data_dir_reaches_tfds_unchanged(store, monkeypatch, capsys, tmp_path):
  monkeypatch.chdir(tmp_path)
  asked = []
  monkeypatch.setattr(prepare.tfds, 'builder',
                      lambda name, data_dir: asked.append(data_dir) or _Builder(name, data_dir))
  # The ArrayRecord copy is made in the prepared version's folder, named by the same URL.
  monkeypatch.setattr(prepare, 'write_array_record', lambda d: asked.append(d) and False)
  assert prepare.main(['--dataset=digits', '--data_dir=gs://my-bucket/tfds']) == 0
  assert asked == ['gs://my-bucket/tfds', 'gs://my-bucket/tfds/digits/1.0.0']
  assert 'gs://my-bucket/tfds' in store.made
  assert not list(tmp_path.iterdir()), 'a local folder was made for a URL'
  assert 'already prepared in gs://my-bucket/tfds/digits' in capsys.readouterr().out


def test_a_gs_manual_dir_is_looked_in_not_made_local(store, monkeypatch, capsys):
  monkeypatch.setattr(
      prepare.tfds, 'builder', lambda name, data_dir: types.SimpleNamespace(
          is_prepared=lambda: False, data_dir=data_dir, info=types.SimpleNamespace(homepage='')))
  code = prepare.main([
      '--dataset=imagenet2012', '--data_dir=gs://my-bucket/tfds',
      '--manual_dir=gs://my-bucket/manual'
  ])
  assert code == 2
  err = capsys.readouterr().err
  assert 'not found in --manual_dir=gs://my-bucket/manual' in err
  assert epath.Path('gs://my-bucket/tfds').is_dir()


def test_training_opens_a_gs_data_dir_as_given(store, monkeypatch, tmp_path):
  # pylint: disable=g-import-not-at-top
  from se_flax.data import sources
  from tests.data.dataset_configs import dataset_config
  # pylint: enable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  asked = []
  builder = types.SimpleNamespace(
      is_prepared=lambda: True,
      info=types.SimpleNamespace(file_format=sources.tfds.core.FileFormat.TFRECORD))
  monkeypatch.setattr(sources.tfds, 'builder',
                      lambda name, data_dir: asked.append(data_dir) or builder)
  assert sources.get_builder(dataset_config('digits', 'gs://my-bucket/tfds')) is builder
  assert asked == ['gs://my-bucket/tfds']
  assert not list(tmp_path.iterdir()), 'a local folder was made for a URL'
