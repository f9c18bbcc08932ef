"""The XLA flags of the processes the tests start.

A test in a pytest worker runs each program for a step or two, so compiling
it costs more than running it: there LLVM runs at -O0
(`--xla_backend_optimization_level=0`), which compiles a training step in
about half the time. The HLO passes, and so the collectives that tests count
in compiled programs, are unchanged. The `main.py` processes of the
integration tests keep the default: they share a persistent compilation cache,
so most of them load their programs compiled and only run them, and run them
for tens of steps.
"""

FAST_COMPILE = '--xla_backend_optimization_level=0'


def flags(devices: int, *, fast_compile: bool) -> str:
  """XLA_FLAGS for a CPU process with `devices` host devices."""
  return f'--xla_force_host_platform_device_count={devices}' + (
      f' {FAST_COMPILE}' if fast_compile else '')
