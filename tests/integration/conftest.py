"""Fixtures of the end-to-end tests: see fixtures.py; tiny ImageNets from tests/data."""

# pylint: disable=unused-import
from tests.data.conftest import imagenet
from tests.integration.fixtures import digits_data
from tests.integration.fixtures import digits_run
from tests.integration.fixtures import jax_cache
from tests.integration.fixtures import reference_run
from tests.integration.fixtures import shared_root
from tests.integration.fixtures import two_process_run
