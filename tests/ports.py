"""Localhost ports for test processes that meet through jax.distributed.

A free port is found by binding port 0 and closing the socket, so some other
program may take it before the coordinator binds it. The processes of one
run are therefore started again as a group, on a fresh port, when the
coordinator reports that it could not bind: `on_free_port` does that.

The same holds for gloo's connection time-out: a process that reaches a
collective more than gloo's fixed 30 s after its peer ends the run. On a
loaded 2-core machine one process of a group can fall that far behind the
other while both load their programs; the group is then started again too.
A test that has signalled or killed a process does not retry: there the
message fails it.
"""

import socket
import time

ATTEMPTS = 5
# What jax's coordination service prints when its port is taken (gRPC's and the OS's words).
PORT_TAKEN = ('Failed to start RPC server', 'Failed to add port to server',
              'Address already in use')
# What a process prints when its peer came to a collective after gloo's time-out.
PEER_LATE = ('Gloo context initialization failed',)


class PortTaken(Exception):
  """The group could not start: its coordinator's port was taken, or a peer came too late."""


def free_port() -> int:
  """A port nothing listens on now, on every interface (the coordinator binds [::]:port)."""
  try:
    sock = socket.socket(socket.AF_INET6)
    sock.bind(('::', 0))
  except OSError:  # No IPv6 on this machine.
    sock = socket.socket(socket.AF_INET)
    sock.bind(('', 0))
  with sock:
    return sock.getsockname()[1]


def port_taken(text: str) -> bool:
  return any(words in text for words in PORT_TAKEN)


def peer_late(text: str) -> bool:
  return any(words in text for words in PEER_LATE)


def on_free_port(start, attempts: int = ATTEMPTS):
  """`start(port)` on fresh ports until it does not raise PortTaken; returns its result."""
  for _ in range(attempts):
    port = free_port()
    try:
      return start(port)
    except PortTaken:
      continue
  raise AssertionError(f'{attempts} starts in a row failed: the coordinator\'s port was taken '
                       'or a peer came too late for gloo')


def check_group(processes, output_of):
  """Raises PortTaken, after killing the group, if a process exited as `port_taken` or `peer_late`.

  `output_of(process)` is the text the process wrote so far (its stderr).
  """
  for proc in processes:
    if proc.poll() in (None, 0):
      continue
    text = output_of(proc)
    if port_taken(text) or peer_late(text):
      kill(processes)
      raise PortTaken(text[-500:])


def wait_group(processes, output_of, timeout):
  """Waits until every process has exited; raises PortTaken as check_group does.

  A group whose coordinator failed to bind would otherwise leave the other
  processes waiting for it until jax's initialisation timeout.
  """
  deadline = time.monotonic() + timeout
  while any(p.poll() is None for p in processes):
    check_group(processes, output_of)
    if time.monotonic() > deadline:
      kill(processes)
      raise AssertionError(f'processes still running after {timeout} s')
    time.sleep(0.1)
  check_group(processes, output_of)


def kill(processes):
  """SIGKILLs the processes (which the test started) and reaps them."""
  for proc in processes:
    if proc.poll() is None:
      proc.kill()
  for proc in processes:
    proc.wait()
