"""Every expected failure of se_flax, and the exit code each one ends a command with.

One class per kind of failure; each carries its exit code, so the command line
catches `SEFlaxError` once and exits with `e.exit_code` (docs/failures.md lists
them for users). Scripts that launch runs import the constants below.
"""

EXIT_OK = 0
EXIT_UNEXPECTED = 1        # a bug: Python prints the traceback
EXIT_CONFIG_ERROR = 2      # a command line, config, data location or workdir that cannot work (or
                           # a workdir another run holds): fix the command
EXIT_NON_FINITE = 3        # the loss or the state went NaN/Inf
EXIT_CHECKPOINT_CORRUPT = 4  # checkpoints exist, none is readable
EXIT_WRITE_ERROR = 5       # the workdir cannot be written: permissions, or the disk is full
EXIT_LOST_PROCESS = 6      # another process of a multi-process run was lost
# A run that saved a checkpoint because it was asked to stop (SIGTERM); a
# scheduler wrapper requeues on it (SLURM `--requeue`, or a loop on $?).
EXIT_PREEMPTED = 42
# Stopped by Ctrl-C (SIGINT) after saving a checkpoint, or at once on a second
# Ctrl-C; 128 + SIGINT, as shells report it.
EXIT_INTERRUPTED = 130


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
