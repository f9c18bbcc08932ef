"""The command line of main.py: absl flags and the ml_collections config, parsed into a ConfigError.

absl and config_flags report a bad command line in their own ways: a
traceback for an unknown config field, `FATAL Flags parsing error` with
exit 1 for a bad value, a deferred IOError for a missing config file. `parse`
runs them and turns every such failure into one `errors.ConfigError` line
that names the flag, the value and what is allowed (docs/failures.md).

`--config.<field>=None` sets a field whose default is None or a placeholder
to None (config_flags alone would read "None" for a tuple field as (None,)).
"""

import difflib
import importlib.util
import os
import re
from typing import Optional, Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from se_flax import errors

CONFIG = 'config'
_OVERRIDE = re.compile(r'^--?(no)?config\.([^=\s]+)(?:=(.*))?$', re.S)


def define_config_flag(help_string: str, flag_values: flags.FlagValues = flags.FLAGS):
  """DEFINE_config_file('config') reading its overrides from the argv `parse` hands it."""
  argv = []  # the command line config_flags reads its overrides from, set by `parse`
  holder = config_flags.DEFINE_config_file(CONFIG, None, help_string, flag_values=flag_values,
                                           sys_argv=argv)
  holder.argv = argv
  return holder


def parse(argv: Sequence[str], config_holder,
          flag_values: flags.FlagValues = flags.FLAGS) -> list:
  """Parses `argv` into `flag_values`; returns the positional arguments.

  Raises:
    errors.ConfigError: any flag, config file, config argument or config
      field that cannot be used; the message is one line.
  """
  argv = list(argv)
  last = {}  # field -> its last value on the command line
  for m in filter(None, map(_OVERRIDE.match, argv[1:])):
    last[m.group(2)] = None if m.group(1) else m.group(3)
  nulls = [field for field, value in last.items() if value == 'None']
  # config_flags never sees "None": it would read it as a string, or as (None,) for a tuple.
  kept = [a for a in argv if not (_OVERRIDE.match(a) and _OVERRIDE.match(a).group(3) == 'None')]
  config_holder.argv[:] = kept
  try:
    rest = flag_values(kept)
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise _explain(kept, flag_values, e) from None
  config = config_holder.value
  if config is None:
    if nulls:
      raise errors.ConfigError(f'--config.{nulls[0]}=None needs --config=FILE before it')
    return rest  # eval and analyze read the config stored with the checkpoint
  if not isinstance(config, ml_collections.ConfigDict):
    # config_flags defers a missing file until the config is read; load it again to say why.
    _load(_config_spec(kept))
    raise errors.ConfigError(f'--config={_config_spec(kept)} did not give a ConfigDict')
  for field in nulls:
    _set_none(config, field)
  return rest


# ---------------------------------------------------------------- the config file

def _config_spec(argv) -> Optional[str]:
  spec = None
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith(('--config=', '-config=')):
      spec = arg.split('=', 1)[1]
    elif arg in ('--config', '-config') and i + 1 < len(argv):
      spec = argv[i + 1]
  return spec


def _load(spec: str) -> ml_collections.ConfigDict:
  """The config `spec` ('path[:arg]') names, or a ConfigError saying why there is none."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise errors.ConfigError(f'--config={spec}: no config file {path!r}{_nearby_files(path)}')
  try:
    module_spec = importlib.util.spec_from_file_location('se_flax_user_config', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise errors.ConfigError(f'--config={spec}: {_first_line(e)}') from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise errors.ConfigError(f'--config={spec}: get_config() returned {type(config).__name__}, '
                             'not a ConfigDict')
  return config


def _nearby_files(path):
  folder = os.path.dirname(path) or '.'
  if not os.path.isdir(folder):
    return f' (there is no folder {folder!r})'
  names = sorted(n for n in os.listdir(folder) if n.endswith('.py') and not n.startswith('_'))
  close = difflib.get_close_matches(os.path.basename(path), names, n=1)
  if close:
    return f'; did you mean {os.path.join(os.path.dirname(path), close[0])}?'
  return f'; {folder} holds {names}' if names else ''


# ---------------------------------------------------------------- fields

def _leaf_paths(config, prefix=''):
  out = []
  for key in config.keys():
    value = config[key]
    path = f'{prefix}{key}'
    out.append(path)
    if isinstance(value, ml_collections.ConfigDict):
      out += _leaf_paths(value, path + '.')
  return out


def _unknown_field(config, field) -> Optional[str]:
  """The message for `field` if `config` lacks it, else None."""
  node, done = config, []
  for part in field.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      paths = _leaf_paths(config)
      close = difflib.get_close_matches(field, paths, n=1, cutoff=0.6)
      hint = (f'did you mean config.{close[0]}?' if close else
              f"config{'.' if done else ''}{'.'.join(done)} has fields "
              f'{sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []}')
      return f'--config.{field}: the config has no field config.{field}; {hint}'
    node, done = node[part], done + [part]
  return None


def _parent_and_key(config, field):
  parent, _, key = field.rpartition('.')
  node = config
  for part in filter(None, parent.split('.')):
    node = node[part]
  return node, key


def _type_name(kind):
  return {int: 'an integer', float: 'a number', bool: 'true or false', str: 'a string',
          tuple: 'a tuple, e.g. (0, 1) or 0,1'}.get(kind, getattr(kind, '__name__', str(kind)))


def _set_none(config, field):
  message = _unknown_field(config, field)
  if message:
    raise errors.ConfigError(message)
  parent, key = _parent_and_key(config, field)
  field_ref = parent._fields.get(key)  # pylint: disable=protected-access  (a placeholder's)
  nullable = isinstance(field_ref, ml_collections.FieldReference) or parent[key] is None
  kind = config_path.get_type(field, config)
  if not nullable and kind is str:
    with parent.unlocked():
      parent[key] = 'None'  # a name, as config_flags reads it
    return
  if not nullable:
    raise errors.ConfigError(f'--config.{field}=None: config.{field} cannot be None; it takes '
                             f'{_type_name(kind)} (now {parent[key]!r})')
  with parent.unlocked():
    parent[key] = None


# ---------------------------------------------------------------- absl failures

def _overrides(argv):
  return [(m.group(2), m.group(3)) for m in map(_OVERRIDE.match, argv[1:]) if m]


def _explain(argv, flag_values, e) -> errors.ConfigError:
  """The one-line ConfigError for an exception raised while parsing `argv`."""
  if isinstance(e, errors.ConfigError):
    return e
  spec = _config_spec(argv)
  overrides = _overrides(argv)
  if spec is None and overrides:
    return errors.ConfigError(f'--config.{overrides[0][0]} needs --config=FILE before it, '
                              'e.g. --config=configs/digits.py (without --config, eval and '
                              'analyze use the config stored with the checkpoint, unchanged)')
  config = None
  if spec is not None and (overrides or 'flag --config=' in str(e)):
    try:
      config = _load(spec)
    except errors.ConfigError as load_error:
      return load_error
  if config is not None:
    for field, _ in overrides:
      message = _unknown_field(config, field)
      if message:
        return errors.ConfigError(message)
  if isinstance(e, flags.UnrecognizedFlagError):
    return _unknown_flag(e, flag_values)
  if isinstance(e, flags.IllegalFlagValueError):
    return _illegal_value(e, config, flag_values)
  if type(e).__name__ == 'FlagOrderError' and 'before a value for' in str(e):
    return errors.ConfigError(f'--config.{overrides[0][0]} comes before --config=FILE; '
                              'give --config=FILE first')
  return errors.ConfigError(f'bad command line: {_first_line(e)}')


def _unknown_flag(e, flag_values):
  names = [n for n in flag_values if not n.startswith(f'{CONFIG}.')]
  close = difflib.get_close_matches(e.flagname, names, n=1)
  hint = f'did you mean --{close[0]}?' if close else 'see --helpshort'
  return errors.ConfigError(f'unknown flag --{e.flagname}; {hint}')


_ILLEGAL = re.compile(r'^flag --([^=]+)=(.*?): (.*)$', re.S)


def _illegal_value(e, config, flag_values):
  match = _ILLEGAL.match(str(e))
  if not match:
    return errors.ConfigError(f'bad command line: {_first_line(e)}')
  name, value, reason = match.groups()
  if name == CONFIG and value == 'None':
    return errors.ConfigError('--config is required, e.g. --config=configs/digits.py')
  if name.startswith(f'{CONFIG}.') and config is not None:
    field = name[len(CONFIG) + 1:]
    parent, key = _parent_and_key(config, field)
    current = parent[key]
    if isinstance(current, ml_collections.ConfigDict):
      return errors.ConfigError(
          f'--{name}={value}: config.{field} is a group of fields ({", ".join(sorted(current))}); '
          f'set one of them, e.g. --{name}.{sorted(current)[0]}=VALUE')
    kind = config_path.get_type(field, config)
    return errors.ConfigError(f'--{name}={value}: config.{field} takes {_type_name(kind)} '
                              f'(now {current!r})')
  flag = flag_values[name] if name in flag_values else None
  allowed = getattr(getattr(flag, 'parser', None), 'enum_values', None)
  if allowed:
    return errors.ConfigError(f'--{name}={value} is unknown; choose one of {list(allowed)}')
  kind = type(getattr(flag, 'parser', None)).__name__
  if kind == 'IntegerParser':
    return errors.ConfigError(f'--{name}={value}: --{name} takes an integer')
  return errors.ConfigError(f'--{name}={value}: {_first_line(reason)}')


def _first_line(e) -> str:
  text = str(e).strip()
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  return lines[0][:400] if lines else type(e).__name__
