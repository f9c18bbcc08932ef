"""The command line of main.py: absl flags and an ml_collections config, each failure one line.

absl parses the flags, and `ml_collections.config_flags` the config file and
its `--config.<field>=VALUE` overrides; `parse` runs them as they are and adds
two things (docs/design.md#the-command-line):

- every failure is one `errors.ConfigError` line naming the flag, the value
  and what is allowed, and the closest name where there is one, where absl
  alone prints `FATAL Flags parsing error` and exits 1 and config_flags
  raises a traceback or defers a missing file until the config is read;
- `--config.<field>=None` sets a field whose default is None or a
  placeholder to None (config_flags reads a string "None", or (None,)).

A new flag in main.py needs nothing here: absl's enum and integer checks get
their lines from `_illegal_value`. Each message is one branch of `_explain`.
"""

import difflib
import os
from typing import Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from se_flax import errors

CONFIG = 'config'

# What a value must be, by Python type name or absl parser `flag_type()`.
_TAKES = {
    'int': 'an integer',
    'float': 'a number',
    'bool': 'true or false',
    'str': 'a string',
    'string': 'a string',
    'tuple': 'a tuple, e.g. (0, 1) or 0,1'
}


def define_config_flag(help_string: str,
                       flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagHolder:
  """DEFINE_config_file('config'), its parser watched so that `parse` can explain a failure."""
  argv = []  # the command line config_flags reads the overrides' names from; `parse` fills it
  holder = config_flags.DEFINE_config_file(CONFIG, None, help_string, flag_values=flag_values,
                                           sys_argv=argv)
  flag_values[CONFIG].parser = _ConfigFile(flag_values[CONFIG].parser, argv)
  return holder


class _ConfigFile(flags.ArgumentParser):
  """config_flags' parser of `--config=FILE[:ARG]`, keeping the spec, the config and what failed.

  A file that gives no ConfigDict fails here, `error` the reason in one line.
  """

  def __init__(self, parser: flags.ArgumentParser, argv: list):
    self._parser, self.argv = parser, argv
    self.spec = self.config = self.error = None

  def parse(self, argument):
    self.spec, self.config, self.error = argument, None, None
    path = argument.partition(':')[0]
    if not os.path.isfile(path):
      self.error = f'no config file {path!r}{_nearby_files(path)}'
      raise ValueError(self.error)
    try:
      config = self._parser.parse(argument)
    except Exception as e:
      if isinstance(e, flags.DuplicateFlagError) or isinstance(e.__context__,
                                                               flags.DuplicateFlagError):
        # A program given as the config (main.py) defines its flags again when loaded.
        self.error = (f'{path} is not a config file: it defines command-line flags. A config '
                      'file defines get_config() returning a ConfigDict, e.g. configs/digits.py')
        raise ValueError(self.error) from None
      # config_flags raises a TypeError or ValueError of get_config() again, its traceback the text.
      self.error = _first_line(e.__context__ if isinstance(e, (TypeError, ValueError)) else e)
      raise
    if not isinstance(config, ml_collections.ConfigDict):
      try:  # config_flags keeps a file it could not read as an object that raises when used
        getattr(config, 'keys', None)
        self.error = f'get_config() returned {type(config).__name__}, not a ConfigDict'
      except OSError as e:
        self.error = _first_line(e.__cause__ or e)
      raise ValueError(self.error)
    self.config = config
    return config

  def flag_type(self):
    return self._parser.flag_type()


def parse(argv: Sequence[str], config_holder: flags.FlagHolder,
          flag_values: flags.FlagValues = flags.FLAGS) -> list:
  """Parses `argv` into `flag_values`; returns [program name], as absl's app.run expects.

  Raises:
    errors.ConfigError: any flag, config file, config argument, config field
      or positional argument that cannot be used; the message is one line.
  """
  file = flag_values[CONFIG].parser
  try:
    argv = list(argv[:1]) + flag_values.read_flags_from_files(argv[1:], force_gnu=False)
    _refuse_two_configs(argv[1:])
    overrides = [(f, v) for f, v in map(_override, argv[1:]) if f]
    # config_flags never sees "None": it would read it as a string, or as (None,) for a tuple.
    file.argv[:] = [a for a in argv if _override(a)[1] != 'None']
    rest = flag_values(file.argv)
  except errors.ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-exception-caught
    fields = [f for f, _ in map(_override, argv[1:]) if f]
    raise _explain(e, file, fields, flag_values) from None
  nulls = [field for field, value in dict(overrides).items() if value == 'None']  # the last wins
  if nulls and config_holder.value is None:
    raise errors.ConfigError(f'--config.{nulls[0]}=None needs --config=FILE before it')
  for field in nulls:
    _set_none(config_holder.value, field)
  if len(rest) > 1:
    raise errors.ConfigError(f'unexpected argument(s) {rest[1:]}: every option is a --flag=value '
                             '(a value with spaces needs quotes)')
  return rest


def _refuse_two_configs(args):
  """One --config=FILE: with two, config_flags would load both and clash on their overrides."""
  specs = [
      a.partition('=')[2] or '(no value)'
      for a in args
      if a.lstrip('-').partition('=')[0] == CONFIG and a.startswith('-')
  ]
  if len(specs) > 1:
    raise errors.ConfigError(
        f'--config is given {len(specs)} times ({", ".join(specs)}); give one --config=FILE '
        '(a --flagfile counts too) and change its fields with --config.<field>=VALUE')


def _override(arg):
  """(field, value) of `--config.<field>[=value]` (value None without '='), else (None, None)."""
  name, equals, value = arg.lstrip('-').partition('=')
  for prefix in (f'{CONFIG}.', f'no{CONFIG}.'):
    if arg.startswith('-') and name.startswith(prefix):
      return name[len(prefix):], value if equals else None
  return None, None


# ---------------------------------------------------------------- absl's and config_flags' errors


def _explain(e, file, fields, flag_values) -> errors.ConfigError:
  """The one-line ConfigError for an exception raised while parsing; `fields`: the overrides."""
  if file.error:
    return errors.ConfigError(f'--config={file.spec}: {file.error}')
  if file.spec is None and fields:
    return errors.ConfigError(f'--config.{fields[0]} needs --config=FILE before it, '
                              'e.g. --config=configs/digits.py (without --config, eval and '
                              'analyze use the config stored with the checkpoint, unchanged)')
  for field in fields:
    message = file.config is not None and _unknown_field(file.config, field)
    if message:
      return errors.ConfigError(message)
  if isinstance(e, config_flags.config_flags.FlagOrderError) and 'before a value' in str(e):
    return errors.ConfigError(f'--config.{fields[0]} comes before --config=FILE; '
                              'give --config=FILE first')
  if isinstance(e, flags.UnrecognizedFlagError):
    names = [n for n in flag_values if not n.startswith(f'{CONFIG}.')]
    close = difflib.get_close_matches(e.flagname, names, n=1)
    hint = f'did you mean --{close[0]}?' if close else 'see --helpshort'
    return errors.ConfigError(f'unknown flag --{e.flagname}; {hint}')
  if isinstance(e, flags.IllegalFlagValueError):
    return _illegal_value(e, file.config, flag_values)
  return errors.ConfigError(f'bad command line: {_first_line(e)}')


def _illegal_value(e, config, flag_values):
  # absl's message is 'flag --NAME=VALUE: REASON'; the error keeps neither part apart.
  head, _, reason = str(e).partition(': ')
  name, _, value = head.removeprefix('flag --').partition('=')
  if name not in flag_values:
    return errors.ConfigError(f'bad command line: {_first_line(e)}')
  parser = flag_values[name].parser  # an override's flag too: config_flags defines one for each
  allowed = getattr(parser, 'enum_values', None)
  if allowed:
    return errors.ConfigError(f'--{name}={value} is unknown; choose one of {list(allowed)}')
  takes = _TAKES.get(parser.flag_type())
  if name.startswith(f'{CONFIG}.') and config is not None:
    field = name[len(CONFIG) + 1:]
    current = config_path.get_value(field, config)
    if isinstance(current, ml_collections.ConfigDict):
      return _group(field, value, current)
    return errors.ConfigError(f'--{name}={value}: config.{field} takes {takes} (now {current!r})')
  if takes:
    return errors.ConfigError(f'--{name}={value}: --{name} takes {takes}')
  return errors.ConfigError(f'--{name}={value}: {_first_line(reason)}')


# ---------------------------------------------------------------- fields and files


def _unknown_field(config, field):
  """The message for `field` if `config` lacks it, else None."""
  node, done = config, []
  for part in field.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      close = difflib.get_close_matches(field, list(_paths(config)), n=1, cutoff=0.6)
      keys = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      hint = (f'did you mean config.{close[0]}?'
              if close else f"config{'.' if done else ''}{'.'.join(done)} has fields {keys}")
      return f'--config.{field}: the config has no field config.{field}; {hint}'
    node, done = node[part], done + [part]
  return None


def _paths(config, prefix=''):
  """Every field's dotted path, groups included."""
  for key, value in config.items():
    yield prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      yield from _paths(value, f'{prefix}{key}.')


def _set_none(config, field):
  """`--config.<field>=None`: None for a field that may be None, the name 'None' for a string."""
  message = _unknown_field(config, field)
  if message:
    raise errors.ConfigError(message)
  group, _, key = field.rpartition('.')
  parent = config_path.get_value(group, config) if group else config
  # A placeholder declares a type and may be None; to_dict shows it as the reference it is.
  nullable = parent[key] is None or isinstance(
      parent.to_dict(preserve_field_references=True)[key], ml_collections.FieldReference)
  kind = parent.get_type(key)
  if isinstance(parent[key], ml_collections.ConfigDict):
    raise _group(field, 'None', parent[key])
  if not nullable and kind is not str:
    raise errors.ConfigError(f'--config.{field}=None: config.{field} cannot be None; it takes '
                             f'{_TAKES.get(kind.__name__, kind.__name__)} (now {parent[key]!r})')
  parent[key] = None if nullable else 'None'  # a string field reads a name, as config_flags does


def _group(field, value, group) -> errors.ConfigError:
  names = sorted(group)
  return errors.ConfigError(
      f'--config.{field}={value}: config.{field} is a group of fields ({", ".join(names)}); '
      f'set one of them, e.g. --config.{field}.{names[0]}=VALUE')


def _nearby_files(path):
  folder = os.path.dirname(path) or '.'
  if not os.path.isdir(folder):
    return f' (there is no folder {folder!r})'
  names = sorted(n for n in os.listdir(folder) if n.endswith('.py') and not n.startswith('_'))
  close = difflib.get_close_matches(os.path.basename(path), names, n=1)
  if close:
    return f'; did you mean {os.path.join(os.path.dirname(path), close[0])}?'
  return f'; {folder} holds {names}' if names else ''


def _first_line(e) -> str:
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  return lines[0][:400] if lines else type(e).__name__
