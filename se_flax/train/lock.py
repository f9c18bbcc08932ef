"""One training run per workdir: WORKDIR/lock names the run that holds it.

`WorkdirLock.acquire` creates the file atomically (O_EXCL) with the holder's
host, pid and start time, and a thread refreshes its mtime every
`HEARTBEAT_SECONDS`. A second run finds the file and stops with
errors.WorkdirLockedError naming the holder. A lock left by a run that died
(its pid is gone on this host, or no heartbeat for `stale_seconds()`, the case
of another host) is taken over with a note. Only process 0 of a run takes the
lock; eval and analyze take none.

On an object store (a gs:// workdir) there is no exclusive create through
epath and no mtime to touch: the lock object is written whole when none
exists and read back, and its heartbeat is a `heartbeat` time written into
it again. Read-back stops a run that lost a race it can see; two runs whose
check and write interleave within one object write can still both start
(GCS's create-only write, `ifGenerationMatch=0`, is not reachable through
epath).
"""

import json
import os
import socket
import threading
import time
import uuid

from etils import epath

from se_flax import environment
from se_flax import errors
from se_flax import paths

LOCK_FILE = 'lock'
HEARTBEAT_SECONDS = 30.0


def stale_seconds() -> float:
  """How long without a heartbeat a holder on another host is presumed dead (600 s, or
  $SE_FLAX_LOCK_STALE_SECONDS)."""
  return environment.seconds('SE_FLAX_LOCK_STALE_SECONDS')


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # someone else's process
  return True


class WorkdirLock:
  """The lock of one workdir; a context manager that releases it on exit."""

  def __init__(self, workdir: str):
    self.path = epath.Path(workdir) / LOCK_FILE
    self._object_store = paths.is_url(workdir)
    self._token = uuid.uuid4().hex
    self._stop = threading.Event()
    self._thread = None
    self.note = None  # set when a dead run's lock was taken over
    self._record = {}

  def _holder(self):
    """(holder dict, seconds since its heartbeat), or (None, None) if there is no lock file."""
    try:
      data = self.path.read_bytes()
      mtime = None if self._object_store else os.stat(self.path).st_mtime
    except FileNotFoundError:
      return None, None
    try:
      holder = json.loads(data.decode('utf-8'))
    except ValueError:  # UnicodeDecodeError too: a write cut short, or bytes from elsewhere
      holder = {}  # only its age counts
    if not isinstance(holder, dict):
      holder = {}
    if mtime is None:  # an object store: the holder writes its heartbeat into the object
      mtime = float(holder.get('heartbeat', 0.0))
    return holder, time.time() - mtime

  def _dead(self, holder, age) -> bool:
    if holder.get('host') == socket.gethostname() and isinstance(holder.get('pid'), int):
      return not _pid_alive(holder['pid'])
    return age > stale_seconds()

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock, or raises errors.WorkdirLockedError naming the live holder."""
    record = {
        'host': socket.gethostname(),
        'pid': os.getpid(),
        'token': self._token,
        'started': time.strftime('%Y-%m-%d %H:%M:%S %Z')
    }
    for _ in range(3):
      try:
        self._create(record)
      except FileExistsError:
        holder, age = self._holder()
        if holder is None:
          continue  # released meanwhile
        if not self._dead(holder, age):
          raise errors.WorkdirLockedError(_locked_message(self.path, holder, age))
        self.note = (f'Note: took over the lock of a run that is gone '
                     f'({_describe(holder)}; last heartbeat {age:.0f} s ago).')
        _remove(self.path)
        continue
      self._thread = threading.Thread(target=self._beat, name='se_flax-lock', daemon=True)
      self._thread.start()
      return self
    raise errors.WorkdirLockedError(f'could not take the lock {self.path}: other runs keep '
                                    'taking it; make sure only one run uses this --workdir')

  def _create(self, record) -> None:
    """Writes the lock, or raises FileExistsError if another run holds it."""
    if not self._object_store:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      with os.fdopen(fd, 'w') as f:
        json.dump(record, f)
      return
    if self.path.exists():
      raise FileExistsError(os.fspath(self.path))
    self._record = dict(record, heartbeat=time.time())
    self.path.write_text(json.dumps(self._record))
    holder, _ = self._holder()
    if not holder or holder.get('token') != self._token:
      raise FileExistsError(os.fspath(self.path))  # another run wrote after us: it holds it

  def _touch(self) -> None:
    if self._object_store:
      self._record['heartbeat'] = time.time()
      self.path.write_text(json.dumps(self._record))
    else:
      os.utime(self.path)

  def _beat(self):
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        self._touch()
      except OSError:
        pass  # the workdir went away; the run reports its own write errors

  def release(self) -> None:
    self._stop.set()
    holder, _ = self._holder()
    if holder and holder.get('token') == self._token:
      _remove(self.path)

  def __enter__(self):
    return self

  def __exit__(self, *unused):
    self.release()


def _remove(path):
  try:
    epath.Path(path).unlink()
  except FileNotFoundError:
    pass


def _describe(holder):
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
          f"started {holder.get('started', '?')}")


def _locked_message(path, holder, age):
  return (f'another training run is using this workdir: {_describe(holder)} (last heartbeat '
          f'{age:.0f} s ago; lock {path}). Wait for it to finish or stop it (Ctrl-C saves a '
          'checkpoint), or use another --workdir; if that run is dead on another host, delete '
          'the lock file.')
