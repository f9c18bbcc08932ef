"""The SE_FLAX_* environment variables: each one's default and domain, read here only.

The modules that use one ask here when they need it (never at import), and
the upfront check calls `check()`, so that a bad value is one `error:` line
before anything runs.
"""

import math
import os
from typing import Mapping, Optional, Tuple

from se_flax.errors import ConfigError

_MAX_INT32 = 2 ** 31 - 1

# name -> (a whole number?, default, low, high): a number of seconds in (low, high].
SECONDS = {
    # A workdir lock's holder on another host is presumed dead after this long without a
    # heartbeat (train/lock.py).
    'SE_FLAX_LOCK_STALE_SECONDS': (False, 600.0, 0, 365 * 86400),
    # jax.distributed: how long a process may go silent before the others stop, and how long
    # they wait for each other at start (train/parallel.py).
    'SE_FLAX_HEARTBEAT_TIMEOUT_SECONDS': (True, 100, 0, _MAX_INT32),
    'SE_FLAX_INITIALIZATION_TIMEOUT_SECONDS': (True, 300, 0, _MAX_INT32),
}
# host:port that data/prepare.py probes instead of a data set's download host.
DOWNLOAD_PROBE = 'SE_FLAX_DOWNLOAD_PROBE'


def seconds(name: str, environ: Optional[Mapping[str, str]] = None):
  """The value of SECONDS variable `name` (its default when unset or empty).

  Raises:
    ConfigError: a value outside the variable's domain.
  """
  environ = os.environ if environ is None else environ
  integer, default, low, high = SECONDS[name]
  text = environ.get(name)
  if not text:
    return default
  try:
    value = int(text) if integer else float(text)
  except ValueError:
    value = None
  if value is None or not math.isfinite(value) or not low < value <= high:
    kind = 'a whole number' if integer else 'a number'
    raise ConfigError(f'${name}={text!r} must be {kind} of seconds in ({low}, {high}]')
  return value


def download_probe(environ: Optional[Mapping[str, str]] = None) -> Optional[Tuple[str, int]]:
  """(host, port) of $SE_FLAX_DOWNLOAD_PROBE, or None when unset.

  Raises:
    ConfigError: not host:port with a port in 1..65535.
  """
  environ = os.environ if environ is None else environ
  text = environ.get(DOWNLOAD_PROBE)
  if not text:
    return None
  host, _, port = text.rpartition(':')
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ConfigError(f'${DOWNLOAD_PROBE}={text!r} must be host:port with a port in 1..65535')
  return host, int(port)


def check(environ: Optional[Mapping[str, str]] = None) -> None:
  """Raises ConfigError for the first SE_FLAX_* variable se_flax cannot use."""
  for name in SECONDS:
    seconds(name, environ)
  download_probe(environ)
