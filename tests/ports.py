"""Localhost ports for test processes that meet through jax.distributed.

A free port is found by binding port 0 and closing the socket, so some other
program may take it before the coordinator binds it. The processes of one
run are therefore started again as a group, on a fresh port, when the
coordinator reports that it could not bind: `on_free_port` does that.
"""

import socket
import time

ATTEMPTS = 5
# What jax's coordination service prints when its port is taken (gRPC's and the OS's words).
PORT_TAKEN = ('Failed to start RPC server', 'Failed to add port to server',
              'Address already in use')


class PortTaken(Exception):
  """The coordinator of a process group could not bind its port; start the group again."""


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


def on_free_port(start, attempts: int = ATTEMPTS):
  """`start(port)` on fresh ports until it does not raise PortTaken; returns its result."""
  for _ in range(attempts):
    port = free_port()
    try:
      return start(port)
    except PortTaken:
      continue
  raise AssertionError(f'{attempts} fresh ports in a row were taken before the coordinator '
                       'could bind them')


def check_group(processes, output_of):
  """Raises PortTaken, after killing the group, if a process exited because its port was taken.

  `output_of(process)` is the text the process wrote so far (its stderr).
  """
  for proc in processes:
    if proc.poll() not in (None, 0) and port_taken(output_of(proc)):
      kill(processes)
      raise PortTaken(output_of(proc)[-500:])


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
