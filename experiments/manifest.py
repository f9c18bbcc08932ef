"""DIR/manifest.json: what a sweep planned, how each run was started and how it ended.

The manifest is rewritten whole (temporary file, then rename) on every
change, so a crash of the sweep process never leaves it half-written, and
a re-run of the same command can tell finished runs from interrupted ones.
A manifest that cannot be parsed (a disk that filled, a hand edit) is set
aside as manifest.json.damaged by the sweep: the runs' progress is in their
workdirs, so a re-run rebuilds it.
"""

import datetime
import json
import threading
from typing import Optional

from etils import epath

from se_flax import config_lib

MANIFEST_FILE = 'manifest.json'
# 'interrupted': stopped by Ctrl-C after saving a checkpoint; the same command resumes it.
STATUSES = ('pending', 'running', 'done', 'failed', 'interrupted')
DAMAGED_SUFFIX = '.damaged'


def now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec='seconds')


class ConfigChangedError(ValueError):
  """A run already started in DIR with another config; results would mix two experiments."""


class ManifestDamagedError(ValueError):
  """DIR/manifest.json exists but is not a manifest (truncated, or not JSON)."""


class Manifest:
  """Thread-safe view of DIR/manifest.json."""

  def __init__(self, root):
    self.root = epath.Path(root)
    self.path = self.root / MANIFEST_FILE
    self._lock = threading.Lock()
    self.set_aside = None  # where a damaged manifest was moved, if one was
    try:
      self.data = self.load(root) or {}
    except ManifestDamagedError:
      self.set_aside = self.root / (MANIFEST_FILE + DAMAGED_SUFFIX)
      self.path.replace(self.set_aside)
      self.data = {}

  @staticmethod
  def load(root) -> Optional[dict]:
    """The manifest in `root`, or None where there is none.

    Raises:
      ManifestDamagedError: the file exists but holds no manifest.
    """
    path = epath.Path(root) / MANIFEST_FILE
    try:
      data = json.loads(path.read_text())
    except OSError:  # none there, or `root` is not a directory
      return None
    except ValueError as e:
      raise ManifestDamagedError(f'{path} is damaged ({e})') from None
    if not isinstance(data, dict) or not isinstance(data.get('runs', []), list):
      raise ManifestDamagedError(f'{path} is damaged (not a sweep manifest)')
    return data

  def start(self, plan, launcher: str, python: str, commands: dict, parallel: int = 1):
    """Records the plan, keeping the status of runs the directory already holds.

    Raises:
      ConfigChangedError: a run that has started before has a different config now.
    """
    with self._lock:
      old = {r['name']: r for r in self.data.get('runs', [])}
      runs = []
      for run in plan.runs:
        config = run.config_json()
        entry = old.get(run.name)
        if entry and entry.get('status') != 'pending' and entry.get('config') != config:
          changes = [
              f'{k}: {a!r} -> {b!r}'
              for k, a, b in config_lib.differences(entry.get('config') or {}, config)
          ]
          raise ConfigChangedError(
              f'run {run.name!r} in {self.root} was started with another config (' +
              '; '.join(changes[:5]) + '); use another --root, or delete '
              f'{run.workdir} to start it over')
        fresh = {
            'status': 'pending',
            'exit_code': None,
            'started': None,
            'finished': None,
            'attempts': 0
        }
        kept = {k: entry[k] for k in fresh if entry and k in entry}
        runs.append({
            'name': run.name,
            'workdir': run.workdir,
            'overrides': _jsonable(run.overrides),
            'applied': _jsonable(run.applied),
            'notes': run.notes,
            'total_steps': run.total_steps,
            'command': commands[run.name],
            'config': config,
            **fresh,
            **kept
        })
      self.data = {
          'sweep':
              plan.sweep,
          'sweep_file':
              plan.sweep_file,
          'title':
              plan.title,
          'tables':
              list(plan.tables),
          'axis':
              plan.axis,
          'dataset':
              plan.target,
          'about':
              plan.about,
          'launcher':
              launcher,
          'python':
              python,
          'parallel':
              parallel,
          'created':
              self.data.get('created') or now(),
          'updated':
              now(),
          'runs':
              runs,
          'dropped': [{
              'overrides': _jsonable(d.overrides),
              'reason': d.reason
          } for d in plan.dropped],
      }
      self._write()

  def run(self, name: str) -> dict:
    with self._lock:
      for entry in self.data.get('runs', []):
        if entry['name'] == name:
          return dict(entry)
    raise KeyError(name)

  def update(self, name: str, **fields):
    """Sets fields of one run (status, exit_code, started, finished, ...) and writes the file."""
    if 'status' in fields and fields['status'] not in STATUSES:
      raise ValueError(f'status {fields["status"]!r} is not one of {STATUSES}')
    with self._lock:
      for entry in self.data['runs']:
        if entry['name'] == name:
          entry.update(fields)
          break
      else:
        raise KeyError(name)
      self.data['updated'] = now()
      self._write()

  def _write(self):
    self.root.mkdir(parents=True, exist_ok=True)
    tmp = self.root / (MANIFEST_FILE + '.tmp')
    tmp.write_text(json.dumps(self.data, indent=1, sort_keys=False) + '\n')
    tmp.replace(self.path)


def _jsonable(overrides: dict) -> dict:
  return {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
