"""Fixtures of the command-line tests: the shared root of the end-to-end runs."""

from tests.integration.fixtures import shared_root  # pylint: disable=unused-import
