"""Every expected failure of se_flax, and the exit code each one ends a command with.

One class per kind of failure; each carries its exit code, so the command line
catches `SEFlaxError` once and exits with `e.exit_code` (docs/failures.md lists
them for users). Scripts that launch runs import the constants below.
"""

EXIT_OK = 0
EXIT_UNEXPECTED = 1  # a bug: Python prints the traceback
EXIT_CONFIG_ERROR = 2  # a command line, config, data location or workdir that cannot work (or
# a workdir another run holds): fix the command
EXIT_NON_FINITE = 3  # the loss or the state went NaN/Inf
EXIT_CHECKPOINT_CORRUPT = 4  # checkpoints exist, none is readable
EXIT_WRITE_ERROR = 5  # the workdir cannot be written: permissions, or the disk is full
EXIT_LOST_PROCESS = 6  # another process of a multi-process run was lost
# A run that saved a checkpoint because it was asked to stop (SIGTERM); a
# scheduler wrapper requeues on it (SLURM `--requeue`, or a loop on $?).
EXIT_PREEMPTED = 42
# Stopped by Ctrl-C (SIGINT) after saving a checkpoint, or at once on a second
# Ctrl-C; 128 + SIGINT, as shells report it.
EXIT_INTERRUPTED = 130
# eval or analyze stopped by SIGTERM (they save nothing); 128 + SIGTERM, as shells report it.
EXIT_TERMINATED = 143


class SEFlaxError(Exception):
  """An expected failure: its message is the one line a user sees, `exit_code` the status."""
  exit_code = EXIT_UNEXPECTED


class ConfigError(SEFlaxError, ValueError):
  """A config value that cannot work; the message names the field, the value and what is allowed."""
  exit_code = EXIT_CONFIG_ERROR


class WorkdirLockedError(SEFlaxError, RuntimeError):
  """Another training run holds the workdir's lock; the message names it (host, pid, start)."""
  exit_code = EXIT_CONFIG_ERROR


class DataError(SEFlaxError, FileNotFoundError):
  """Data that is missing or cannot be read where the config points; the message says how to fix it."""
  exit_code = EXIT_CONFIG_ERROR


class NonFiniteError(SEFlaxError, RuntimeError):
  """The loss or the gradients went NaN/Inf under nan_policy='stop', or the state did."""
  exit_code = EXIT_NON_FINITE


class CheckpointCorruptError(SEFlaxError, RuntimeError):
  """Checkpoints exist but none of them can be read."""
  exit_code = EXIT_CHECKPOINT_CORRUPT


class CheckpointWriteError(SEFlaxError, OSError):
  """A checkpoint or metrics file could not be written (permissions, disk full)."""
  exit_code = EXIT_WRITE_ERROR


class LostProcessError(SEFlaxError, RuntimeError):
  """Another process of a multi-process run stopped answering."""
  exit_code = EXIT_LOST_PROCESS


def check_choice(field: str, value, allowed) -> None:
  """The one form of the rule "config.<field> must be one of a list": the list's owner passes it.

  Raises:
    ConfigError: `value` is not in `allowed`; the message names the field and the list.
  """
  if value not in allowed:
    raise ConfigError(f'config.{field}={value!r} is not allowed; choose one of {list(allowed)}')


def check_range(field: str, value, *, integer: bool = False, low=None, high=None,
                low_open: bool = False, high_open: bool = False, allowed=(), hint: str = ''):
  """The one form of the rule "config.<field> must be a number in a range": its owner passes it.

  `value` must be a number (not a bool), finite, an int when `integer`, and
  within [low, high] (an end is excluded when `low_open` / `high_open`; None
  leaves it free), or one of `allowed` (sentinels such as -1). `hint`, e.g.
  what 0 means, ends the message. Returns `value`.

  Raises:
    ConfigError: naming the field, the value and the domain.
  """
  is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
  if allowed and is_number and value in allowed:
    return value
  finite = is_number and value == value and abs(value) != float('inf')
  above = low is None or (finite and (value > low if low_open else value >= low))
  below = high is None or (finite and (value < high if high_open else value <= high))
  if finite and above and below and (isinstance(value, int) or not integer):
    return value
  lower = 'positive' if low == 0 and low_open else f'{">" if low_open else ">="} {low}'
  if integer:
    # The side the value crossed: an int field's upper end is mostly the int32 counters'.
    side = lower if low is not None and (not above or high is None) else None
    if side is None:
      side = f'{"<" if high_open else "<="} {high}' if high is not None else ''
    domain = 'a positive int' if side == 'positive' else f'an int {side}'.rstrip()
  else:
    if low is not None and high is not None:
      domain = f'in {"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'
    elif low is not None:
      domain = lower
    elif high is not None:
      domain = f'{"<" if high_open else "<="} {high}'
    else:
      domain = 'a number'
    if is_number and not finite:
      domain = f'finite and {domain}'
    elif not is_number:
      domain = f'a number {domain}'
  if allowed:
    domain += f', or one of {list(allowed)}'
  raise ConfigError(f'config.{field}={value!r} must be {domain}' + (f' {hint}' if hint else ''))
