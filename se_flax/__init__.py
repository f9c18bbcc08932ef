"""se_flax: Squeeze-and-Excitation networks in JAX and Flax."""

import os

# TensorFlow (the input pipeline, and some tools that import it) prints C++ start-up
# notices (oneDNN, CPU features) at import; they are noise in a JAX program's log.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
