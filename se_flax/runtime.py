"""The process-wide settings se_flax wants, made by one explicit call instead of at import.

`setup()` is called once at start by every program that runs se_flax: main.py,
the experiment runners and tests/conftest.py. Calling it again does nothing.

It calls down into the library (`orbax_quiet.install`,
`data.hide_gpus_from_tensorflow`), and nothing in the library imports it.
Neither module imports TensorFlow or Orbax, so the upfront check that follows
`setup()` stays free of both.

`keep_running_without_console()` (main.py) makes a closed standard output
or error (`main.py ... | head -1`, a `tee` that died) stop the console
output only: the run writes its metrics, TensorBoard events and checkpoints
to the end as it would have.
"""

import errno
import os
import sys

from se_flax.train import orbax_quiet

_done = False


def setup() -> None:
  """Quiets TensorFlow's start-up notices and Orbax's noise; skips TensorFlow's Keras import."""
  global _done
  if _done:
    return
  _done = True
  # TensorFlow (the input pipeline, and some tools that import it) prints C++
  # start-up notices (oneDNN, CPU features) at import; noise in a JAX program's log.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # TensorFlow is only the input pipeline here; tf.keras is never used. At import TensorFlow
  # loads Keras 3's optimizers eagerly (1.5 s of CPU in every process), unless pointed at the
  # legacy tf_keras, whose absence it tolerates.
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
  if 'tensorflow' in sys.modules:
    # Imported already (by a tool or a notebook): keep it off the accelerators
    # before its runtime starts. Otherwise the pipeline does this when it opens data.
    from se_flax import data  # pylint: disable=g-import-not-at-top
    data.hide_gpus_from_tensorflow()
  orbax_quiet.install()


class _Console:
  """A console stream that goes quiet, instead of raising, once its reader has gone."""

  def __init__(self, stream):
    self._stream = stream
    self.closed_by_reader = False

  def _gone(self) -> None:
    self.closed_by_reader = True
    try:
      # Later writes, and the flush of what is still buffered at exit, go nowhere.
      devnull = os.open(os.devnull, os.O_WRONLY)
      os.dup2(devnull, self._stream.fileno())
      os.close(devnull)
    except (OSError, ValueError):
      pass

  def write(self, text):
    if not self.closed_by_reader:
      try:
        return self._stream.write(text)
      except OSError as e:
        if not _reader_gone(e):
          raise
        self._gone()
    return len(text)

  def flush(self):
    if not self.closed_by_reader:
      try:
        self._stream.flush()
      except OSError as e:
        if not _reader_gone(e):
          raise
        self._gone()

  def __getattr__(self, name):
    return getattr(self._stream, name)


def _reader_gone(e: OSError) -> bool:
  return isinstance(e, BrokenPipeError) or e.errno in (errno.EPIPE, errno.ECONNRESET)


def keep_running_without_console() -> None:
  """Makes sys.stdout and sys.stderr, and absl's log handler, survive a reader that went away."""
  for name in ('stdout', 'stderr'):
    stream = getattr(sys, name)
    if stream is not None and not isinstance(stream, _Console):
      setattr(sys, name, _Console(stream))
  from absl import logging  # pylint: disable=g-import-not-at-top
  handler = logging.get_absl_handler().python_handler
  if handler.stream is getattr(sys.stderr, '_stream', None):
    handler.stream = sys.stderr
