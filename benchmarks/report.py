"""What every benchmark table carries: the machine, the versions, the command, and the table.

Standard library only, so that the timm side (run by another interpreter,
without jax) and the GPU driver (without TensorFlow) can use it too. Versions
come from package metadata, never from importing the package: asking for
TensorFlow's version must not load TensorFlow.
"""

import datetime
import importlib.metadata
import os
import platform
import shlex
import statistics
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def usable_cores() -> int:
  """Cores this process may run on (the affinity mask, which containers narrow)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def load_average() -> str:
  try:
    return ' / '.join(f'{x:.2f}' for x in os.getloadavg())
  except OSError:
    return '?'


# Taken when a benchmark script starts (it imports this module first), before it loads anything.
_LOAD_AT_START = load_average()
_STARTED = datetime.datetime.now().strftime('%Y-%m-%d %H:%M')


def package_versions(names) -> str:
  parts = []
  for name in names:
    try:
      parts.append(f'{name} {importlib.metadata.version(name)}')
    except importlib.metadata.PackageNotFoundError:
      pass
  return ', '.join(parts)


def command_line() -> str:
  """The command as typed from the repo root, with the interpreter path made relative to it."""
  exe = sys.executable
  try:
    rel = os.path.relpath(exe, os.getcwd())
    exe = rel if not rel.startswith('..') else exe
  except ValueError:
    pass
  return ' '.join(shlex.quote(a) for a in [exe] + sys.argv)


def header(title: str, devices: str, packages, extra=()) -> str:
  """The lines above a table: what ran, where, with which versions, and how busy the machine was."""
  lines = [
      f'# {title}',
      '',
      f'- started: {_STARTED}',
      f'- machine: {cpu_model()}, {usable_cores()} usable cores '
      f'(os.cpu_count {os.cpu_count()}), {platform.system()} {platform.machine()}',
      f'- devices: {devices}',
      f'- python {platform.python_version()}; {package_versions(packages)}',
      f'- load average (1/5/15 min) at start: {_LOAD_AT_START}',
  ]
  lines += [f'- {line}' for line in extra]
  lines += ['- command (from the repo root):', '', '```', command_line(), '```', '']
  return '\n'.join(lines)


def table(columns, rows) -> str:
  """A markdown table; cells are formatted by the caller."""
  out = ['| ' + ' | '.join(columns) + ' |', '|' + '|'.join('---' for _ in columns) + '|']
  out += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(out)


def median_iqr(samples):
  """(median, interquartile range) of a list of timings."""
  if len(samples) < 2:
    return (samples[0] if samples else float('nan')), 0.0
  q = statistics.quantiles(samples, n=4, method='inclusive')
  return statistics.median(samples), q[2] - q[0]


def ms(seconds: float, iqr: float = None) -> str:
  text = f'{1e3 * seconds:.1f}'
  return text if iqr is None else f'{text} (IQR {1e3 * iqr:.1f})'


def emit(text: str, out: str = None) -> None:
  """Prints the report and, with `out`, writes it there (relative paths from the repo root)."""
  text = text.rstrip() + f'\n\n- load average (1/5/15 min) at end: {load_average()}\n'
  print(text, flush=True)
  if out:
    path = out if os.path.isabs(out) else os.path.join(os.getcwd(), out)
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
      f.write(text)
    print(f'wrote {path}', flush=True)
