"""Data flows one way: the library never imports what sits above it.

`se_flax/` is the library; `configs/`, `experiments/` and `main.py` use it.
A module of the library that imported a config file or the command line
could not be used from a notebook without them, and a change up there would
reach down. Checked on the import statements of every source file.
"""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
ABOVE_THE_LIBRARY = ('configs', 'experiments', 'main', 'benchmarks', 'tests')


def imported_modules(path, text=None):
  """Every module name an import statement of `path` names (relative imports resolved)."""
  package = '.'.join(path.relative_to(REPO).with_suffix('').parts[:-1])
  for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parent = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(parent + ([base] if base else []))
      yield base
      yield from (f'{base}.{alias.name}' for alias in node.names)


def _top(name):
  return name.split('.')[0]


@pytest.mark.parametrize('path', sorted((REPO / 'se_flax').rglob('*.py')),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_the_library_imports_nothing_above_it(path):
  above = sorted({m for m in imported_modules(path) if _top(m) in ABOVE_THE_LIBRARY})
  assert not above, f'{path.relative_to(REPO)} imports {above}'


def test_only_main_imports_the_command_line_module():
  users = sorted(
      str(p.relative_to(REPO))
      for folder in ('se_flax', 'experiments', 'configs')
      for p in (REPO / folder).rglob('*.py')
      if any(m in ('se_flax.cli', 'se_flax.cli.run') for m in imported_modules(p)))
  assert users == [], users


def test_the_scan_sees_an_upward_import():
  # The scan itself: such imports are caught in every spelling, relative ones included.
  text = 'from configs import default\nimport experiments.runs\nfrom .. import cli\n'
  found = set(imported_modules(REPO / 'se_flax' / 'train' / 'probe.py', text))
  assert {'configs', 'experiments.runs', 'se_flax.cli'} <= found
