"""Test-wide settings that must precede the first jax import."""

import os

from tests import xla

# Eight host devices let sharding tests run a real 8-way data-parallel mesh on CPU.
os.environ.setdefault('XLA_FLAGS', xla.flags(8, fast_compile=True))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from se_flax import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position

runtime.setup()
