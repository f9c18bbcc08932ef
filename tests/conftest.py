"""Test-wide settings that must precede the first jax import."""

import os

# Eight host devices let sharding tests run a real 8-way data-parallel mesh on CPU.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from se_flax import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position

runtime.setup()
