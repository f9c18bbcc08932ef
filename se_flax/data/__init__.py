"""Input pipelines: tfds -> tf.data -> per-process numpy batches.

This package is the only place in se_flax that imports TensorFlow. Importing it
hides every GPU from TensorFlow, so that the accelerators belong to JAX alone
and TensorFlow never reserves their memory.
"""

from absl import logging
import tensorflow as tf

try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:
  # The TF runtime was initialised before this import; its devices are fixed now.
  logging.warning('TensorFlow was initialised before se_flax.data: GPUs may stay visible to it.')
