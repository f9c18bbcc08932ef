"""Fixtures of the fault-injection tests (tests/integration/fixtures.py), tiny ImageNets (tests/data)."""

# pylint: disable=unused-import
from tests.data.conftest import corrupt_imagenet
from tests.integration.fixtures import digits_data
from tests.integration.fixtures import digits_run
from tests.integration.fixtures import jax_cache
from tests.integration.fixtures import reference_run
from tests.integration.fixtures import shared_root
