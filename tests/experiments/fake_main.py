"""A stand-in for `python main.py` run as a real process: `--python=<this file>` in a sweep.

The sweep runs `[python, 'main.py', *flags, --workdir=W]`; with this file as
the interpreter it trains no model. A run that has no checkpoint yet saves
step 2, writes its pid to W/pid, and waits; on SIGINT it saves and exits
130, as main.py does on Ctrl-C (W/sigints counts the SIGINTs it got). A run
that resumes finishes at once.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.experiments import fake_runs  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv):
  workdir = fake_runs.workdir_of(argv)
  total = fake_runs.total_of(argv)
  if os.path.isdir(os.path.join(workdir, 'checkpoints')):
    fake_runs.train(workdir, total, start=2)
    return 0
  fake_runs.train(workdir, total, stop=2)
  count = [0]

  def on_sigint(*unused):
    count[0] += 1
    with open(os.path.join(workdir, 'sigints'), 'w') as f:
      f.write(str(count[0]))
    sys.exit(130)

  signal.signal(signal.SIGINT, on_sigint)
  with open(os.path.join(workdir, 'pid'), 'w') as f:
    f.write(str(os.getpid()))
  time.sleep(120)
  return 1


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
