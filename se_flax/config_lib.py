"""Configs as data: the JSON a checkpoint stores, and the differences between two configs."""

import json
from typing import Any

ABSENT = '<absent>'


def as_json(config: Any) -> dict:
  """The config as checkpoints and run records store it: JSON types (tuples become lists)."""
  if hasattr(config, 'to_json_best_effort'):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(dict(config), default=str))


def flatten(tree: dict, prefix: str = '') -> dict:
  """{'a.b': value} for every leaf of a nested dict."""
  out = {}
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(flatten(value, path + '.'))
    else:
      out[path] = value
  return out


def differences(stored: Any, current: Any) -> list:
  """[(field, stored value, current value)] for every field that differs, sorted by field.

  Either side may be a ConfigDict or its JSON; a field present on one side only
  shows `<absent>` on the other.
  """
  a, b = flatten(as_json(stored)), flatten(as_json(current))
  return [(k, a.get(k, ABSENT), b.get(k, ABSENT))
          for k in sorted(set(a) | set(b))
          if a.get(k, ABSENT) != b.get(k, ABSENT)]


def format_differences(diffs: list, limit: int = 20) -> str:
  lines = [f'  config.{k}: {old!r} in the checkpoint, {new!r} now' for k, old, new in diffs[:limit]]
  if len(diffs) > limit:
    lines.append(f'  ... and {len(diffs) - limit} more')
  return '\n'.join(lines)


def with_defaults(stored: Any, defaults: Any) -> Any:
  """`stored` (a ConfigDict) with every field it lacks taken from `defaults`.

  A config stored before a field existed lacks it; the default is the value
  that leaves the run as it was (every later field defaults to "off").
  Stored values always win; `stored` is changed in place and returned.
  """
  for key, value in defaults.items():
    if key not in stored:
      stored[key] = value
    elif hasattr(value, 'items') and hasattr(stored[key], 'items'):
      with_defaults(stored[key], value)
  return stored
