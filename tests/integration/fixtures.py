"""Session fixtures shared by tests/integration and tests/reliability (imported by their conftests).

Expensive things (the digits data, the reference run, compiled programs) are
built once per pytest invocation, also under pytest-xdist: the workers meet
in a directory beside their own temporary roots and build under a file lock.
"""

import pytest

from tests.integration import harness


@pytest.fixture(scope='session')
def shared_root(tmp_path_factory, request):
  base = tmp_path_factory.getbasetemp()
  worker = getattr(request.config, 'workerinput', None)
  # xdist workers get basetemp/popen-gwN; their common parent is this invocation's.
  return (base.parent if worker is not None else base) / 'se_flax_shared'


@pytest.fixture(scope='session')
def jax_cache(shared_root):
  path = shared_root / 'jax_cache'
  path.mkdir(parents=True, exist_ok=True)
  return path


def _prepare_digits(path):
  from se_flax.data import pipeline  # pylint: disable=g-import-not-at-top
  from tests.data.dataset_configs import dataset_config  # pylint: disable=g-import-not-at-top
  pipeline.get_info(dataset_config('digits', path))  # Prepares it.


@pytest.fixture(scope='session')
def digits_data(shared_root):
  """A tfds data_dir with the digits data set prepared."""
  return harness.shared(shared_root, 'digits_data', _prepare_digits)


@pytest.fixture(scope='session')
def reference_run(shared_root, digits_data, jax_cache):
  """The workdir of an uninterrupted run of harness.DIGITS_FLAGS (2 devices)."""

  def build(path):
    harness.run_ok(path / 'run', digits_data, cache_dir=jax_cache)

  return harness.shared(shared_root, 'reference_run', build) / 'run'


@pytest.fixture
def digits_run(digits_data, jax_cache, tmp_path):
  """run(*flags, workdir=None, **kwargs) -> (code, out, err) of main.py on digits, 2 devices."""

  def run(*flags, workdir=None, **kwargs):
    kwargs.setdefault('cache_dir', jax_cache)
    return harness.run(workdir or tmp_path / 'run', digits_data, *flags, **kwargs)

  return run


@pytest.fixture(scope='session')
def two_process_run(shared_root, digits_data, jax_cache):
  """The workdir of an uninterrupted run of two processes (two devices each), built once.

  It keeps a checkpoint of every step, for comparison with a run stopped at any
  step (saving changes nothing else). Its processes' output is beside it:
  `<workdir>.p0.out`, `<workdir>.p1.err`, ...
  """
  from tests.integration import test_multihost as multihost  # pylint: disable=g-import-not-at-top

  def build(path):
    every_step = ('--config.checkpoint_every_steps=1',
                  f'--config.keep_checkpoints={multihost.STEPS}')
    for code, out, err in multihost.run_processes(path / 'run', digits_data, jax_cache,
                                                  *multihost.FLAGS, *every_step):
      assert code == 0, harness.describe(code, out, err)

  return harness.shared(shared_root, 'two_process_run', build) / 'run'
