"""Importing se_flax changes nothing in the process; se_flax.runtime.setup() is the one call that does.

Checked in a fresh interpreter: every module of the package is imported, and
the environment, the exception hooks, the handlers and filters of the loggers
se_flax's dependencies write to, and the signal handlers must be as before.
The third-party packages se_flax imports are imported before the first
snapshot: what they do at import is theirs.
"""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

_PROBE = r'''
import importlib
import json
import logging
import os
import pkgutil
import signal
import sys

for name in ('absl.logging', 'clu.parameter_overview', 'etils.epath', 'flax.linen', 'jax',
             'matplotlib', 'ml_collections', 'numpy', 'optax', 'orbax.checkpoint',
             'tensorboard', 'tensorflow', 'tensorflow_datasets'):
  importlib.import_module(name)

LOGGERS = ('', 'absl', 'orbax', 'asyncio')


def signal_handlers():
  handlers = {}
  for s in signal.valid_signals():
    try:
      handlers[int(s)] = signal.getsignal(s)
    except (OSError, ValueError):
      pass
  return handlers


def snapshot():
  return {
      'os.environ': dict(os.environ),
      'sys.unraisablehook': sys.unraisablehook,
      'sys.excepthook': sys.excepthook,
      'signal handlers': signal_handlers(),
      **{f'logger {name or "root"!r} handlers': list(logging.getLogger(name).handlers)
         for name in LOGGERS},
      **{f'logger {name or "root"!r} filters': list(logging.getLogger(name).filters)
         for name in LOGGERS},
  }


before = snapshot()
import se_flax
modules = ['se_flax'] + [m.name for m in pkgutil.walk_packages(se_flax.__path__, 'se_flax.')]
for name in modules:
  importlib.import_module(name)
after = snapshot()
changed = {key: f'{before[key]!r} -> {after[key]!r}'[:2000]
           for key in before if before[key] != after[key]}
print(json.dumps({'modules': modules, 'changed': changed}))
'''


def _probe():
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu')
  # The probe sees the environment a user's shell gives, not the one runtime.setup() made here.
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  done = subprocess.run([sys.executable, '-c', _PROBE], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-5000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_every_module_changes_nothing():
  result = _probe()
  assert {
      'se_flax.cli', 'se_flax.runtime', 'se_flax.train.loop', 'se_flax.train.checkpoint',
      'se_flax.train.orbax_quiet', 'se_flax.data.pipeline'
  } <= set(result['modules'])
  assert result['changed'] == {}


_SETUP = r'''
import json
import logging
import os
import sys

from absl import logging as absl_logging
from se_flax import runtime

hook = sys.unraisablehook
runtime.setup()
once = (sys.unraisablehook, list(absl_logging.get_absl_logger().filters),
        list(logging.getLogger('asyncio').filters))
runtime.setup()
twice = (sys.unraisablehook, list(absl_logging.get_absl_logger().filters),
         list(logging.getLogger('asyncio').filters))
import tensorflow  # pylint: disable=unused-import
print(json.dumps({'level': os.environ.get('TF_CPP_MIN_LOG_LEVEL'), 'hooked': once[0] is not hook,
                  'filters': [len(once[1]), len(once[2])], 'idempotent': once == twice,
                  'keras': any(m.split('.')[0] == 'keras' for m in sys.modules)}))
'''


def test_runtime_setup_is_idempotent():
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu')
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  env.pop('TF_USE_LEGACY_KERAS', None)
  done = subprocess.run([sys.executable, '-c', _SETUP], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-5000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  # TensorFlow comes up without Keras, which it would otherwise import eagerly (1.5 s).
  assert result == {
      'level': '2',
      'hooked': True,
      'filters': [1, 1],
      'idempotent': True,
      'keras': False
  }
