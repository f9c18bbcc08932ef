"""The XLA flags of the processes the tests start.

A test that compiles a program for a step or two spends most of its time
compiling: such processes, the pytest workers included, run LLVM at -O0
(`--xla_backend_optimization_level=0`), which compiles a larger network's
training step in about half the time. The HLO passes, and so the collectives
that tests count in compiled programs, are unchanged.

The digits runs of tests/integration and tests/reliability (harness.DIGITS_FLAGS)
keep the default: their small program compiles nearly as fast either way, and
then dozens of `main.py` processes load it from the shared compilation cache
and run it for tens of steps, which -O0 code runs slower.
"""

FAST_COMPILE = '--xla_backend_optimization_level=0'


def flags(devices: int, *, fast_compile: bool) -> str:
  """XLA_FLAGS for a CPU process with `devices` host devices."""
  return f'--xla_force_host_platform_device_count={devices}' + (f' {FAST_COMPILE}'
                                                                if fast_compile else '')
