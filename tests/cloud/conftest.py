"""The storage emulator, one per test session, and a fresh gs:// prefix per test."""

import importlib
import uuid

from etils.epath import backend as epath_backend
from etils.epath import gpath
import fsspec
import pytest

from tests.cloud import emulator

# pylint: disable=unused-import  (fixtures of the end-to-end runs)
from tests.integration.fixtures import digits_data
from tests.integration.fixtures import jax_cache
from tests.integration.fixtures import reference_run
from tests.integration.fixtures import shared_root

# `fsspec.registry` is the read-only view; the module of that name holds the dict.
_REGISTRY = importlib.import_module('fsspec.registry')._registry  # pylint: disable=protected-access


@pytest.fixture(scope='session')
def gcs_env(tmp_path_factory):
  """The environment variables that point gcsfs, epath and tensorstore at the emulator."""
  log = tmp_path_factory.mktemp('gcs') / 'emulator.log'
  with emulator.running(log) as variables:
    yield variables


def _fresh_filesystems():
  import gcsfs  # pylint: disable=g-import-not-at-top
  gcsfs.GCSFileSystem.clear_instance_cache()
  gcsfs.core.GCSFileSystem.clear_instance_cache()
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access


@pytest.fixture
def gcs(gcs_env, monkeypatch):
  """A gs:// prefix no other test uses, with this process pointed at the emulator.

  Subprocesses get `gcs_env` in their environment. Here gcsfs may have been
  imported before (it reads some variables at import), so its plain class and
  an anonymous token are set in fsspec's registry and config directly, and
  epath's cached answer to "use tf.io.gfile?" (EPATH_USE_TF) is replaced.
  """
  import gcsfs  # pylint: disable=g-import-not-at-top
  for key, value in gcs_env.items():
    monkeypatch.setenv(key, value)
  for protocol in ('gs', 'gcs'):
    monkeypatch.setitem(_REGISTRY, protocol, gcsfs.core.GCSFileSystem)
    monkeypatch.setitem(fsspec.config.conf, protocol, {'token': 'anon'})
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)
  _fresh_filesystems()
  yield f'gs://{emulator.BUCKET}/{uuid.uuid4().hex[:8]}'
  _fresh_filesystems()
