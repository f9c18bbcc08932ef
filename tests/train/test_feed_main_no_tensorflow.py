"""A whole main.py training run on the synthetic data set imports no TensorFlow."""

import os
import subprocess
import sys

from se_flax.data import datasets
from tests.integration import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME = next(spec.name for spec in datasets.DATASETS.values() if spec.synthetic)

_RUN = '''
import runpy, sys
sys.argv = ['main.py'] + sys.argv[1:]
try:
  runpy.run_path('main.py', run_name='__main__')
finally:
  print('tensorflow imported:', any(m.split('.')[0] == 'tensorflow' for m in sys.modules))
'''


def test_synthetic_training_run_imports_no_tensorflow(tmp_path):
  flags = [
      '--config=configs/cifar.py', f'--workdir={tmp_path / "run"}', f'--config.dataset.name={NAME}',
      '--config.dataset.image_size=8', '--config.model.name=se_cifar_resnet20',
      '--config.batch_size=16', '--config.eval_batch_size=2000', '--config.num_train_steps=2',
      '--config.log_every_steps=1', '--config.checkpoint_every_steps=2'
  ]
  # One device: the run is about what gets imported, not about sharding. Default optimisation:
  # its 10,000-image evaluation runs longer than its program compiles (tests/xla.py).
  result = subprocess.run([sys.executable, '-c', _RUN, *flags], cwd=ROOT, capture_output=True,
                          text=True, env=harness.env(devices=1, fast_compile=False), timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'step 2/2' in result.stdout and 'eval at step 2' in result.stdout
  assert result.stdout.splitlines()[-1] == 'tensorflow imported: False'
