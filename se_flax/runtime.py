"""The process-wide settings se_flax wants, made by one explicit call instead of at import.

`setup()` is called once at start by every program that runs se_flax: main.py,
the experiment runners and tests/conftest.py. Calling it again does nothing.

It calls down into the library (`orbax_quiet.install`,
`data.hide_gpus_from_tensorflow`), and nothing in the library imports it.
Neither module imports TensorFlow or Orbax, so the upfront check that follows
`setup()` stays free of both.
"""

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
