"""Fixtures of the end-to-end tests: see fixtures.py; tiny ImageNets from tests/data."""

# pylint: disable=unused-import
from tests.data.conftest import imagenet
from tests.integration.fixtures import digits_data, digits_run, jax_cache
from tests.integration.fixtures import reference_run, shared_root, two_process_run
