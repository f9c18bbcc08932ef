"""Input pipelines: tfds -> tf.data -> per-process numpy batches.

This package is the only place in se_flax that imports TensorFlow, in its
modules that read data; importing the package, or its plain-Python data set
registry (datasets.py), imports none.
"""

_hidden = False


def hide_gpus_from_tensorflow():
  """Hides every GPU from TensorFlow, so that the accelerators belong to JAX alone.

  TensorFlow otherwise reserves their memory as soon as its runtime starts.
  The pipeline calls it before it opens a data set; calling it again does nothing.
  """
  global _hidden
  if _hidden:
    return
  _hidden = True
  # pylint: disable=g-import-not-at-top
  from absl import logging
  import tensorflow as tf
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    # The TF runtime was initialised before this call; its devices are fixed now.
    logging.warning('TensorFlow was initialised before se_flax.data: GPUs may stay visible to it.')
