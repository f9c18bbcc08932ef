"""The XLA flags of every process the tests start, the pytest workers included.

A test runs each program for a few steps, so compiling it costs more than
running it. With LLVM at -O0 the CPU backend compiles in about half the time
(`make test` measured 40% less time in the compile-bound sharding tests); the
HLO passes, and so the collectives that tests count, are unchanged.
"""

FAST_COMPILE = '--xla_backend_optimization_level=0'


def flags(devices: int) -> str:
  """XLA_FLAGS for a CPU process with `devices` host devices."""
  return f'--xla_force_host_platform_device_count={devices} {FAST_COMPILE}'
