"""Fixtures of the analysis tests: the digits data, the compilation cache and the shared root."""

# pylint: disable=unused-import
from tests.integration.fixtures import digits_data
from tests.integration.fixtures import jax_cache
from tests.integration.fixtures import shared_root
