"""Fixtures for the training tests; the helpers themselves live in tiny.py."""

import jax
import pytest

from se_flax.train import parallel


@pytest.fixture(scope='session')
def mesh8():
  assert jax.device_count() == 8, 'tests/conftest.py should force 8 CPU devices'
  return parallel.create_mesh()
