"""Input pipelines: tfds -> tf.data -> per-process numpy batches.

This package is the only place in se_flax that imports TensorFlow. Importing it
hides every GPU from TensorFlow, so that the accelerators belong to JAX alone
and TensorFlow never reserves their memory.
"""

import importlib
import importlib.resources
import importlib.resources.abc  # pylint: disable=unused-import  (makes `.abc` an attribute)
import sys

from absl import logging
import tensorflow as tf

try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:
  # The TF runtime was initialised before this import; its devices are fixed now.
  logging.warning('TensorFlow was initialised before se_flax.data: GPUs may stay visible to it.')

# tensorflow-datasets 4.9.x reads `importlib_resources.abc.Traversable` when a
# builder prepares data, but declares that backport only for Python < 3.9
# (tensorflow/datasets#11212). The standard library's module is the same API.
try:
  importlib.import_module('importlib_resources')
except ImportError:
  sys.modules['importlib_resources'] = importlib.resources
