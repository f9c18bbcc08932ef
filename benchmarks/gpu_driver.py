"""The GPU run of benchmarks/throughput.py, for a machine whose Python has jax, not TensorFlow.

Called by benchmarks/gpu.sh. It hides the packages such a machine lacks
(TensorFlow, tensorflow-datasets, ml_collections, clu) before anything is
imported, so that the same code path runs on a CPU machine that has them:
an accidental import fails loudly instead of passing here and failing there.
throughput.py then replaces ml_collections by a stand-in (se_flax.train.step
and .optim name it in annotations only) and reads no config file. After the
run it checks that none of the hidden packages got imported, and says so in
the report.

Defaults: SE-ResNet-50, ResNet-50, SE-ResNeXt-50 and ResNeXt-50, bfloat16,
per-device batch 256, 224x224, timm's bottleneck layout (stride on the 3x3, so
that timm's models are the same networks), no eval step; then timm's
counterparts (channels-last, bf16 autocast) under the same interpreter.
Further flags go to throughput.py and override these, e.g. for a CPU check:

  PYTHON=.venv/bin/python benchmarks/gpu.sh --batch=2 --image_size=32 --steps=1 \
      --rounds=1 --warmup=1 --dtype=float32 --torch_python=.venv-torch/bin/python
"""

import os
import sys

HIDDEN = ('tensorflow', 'tensorflow_datasets', 'ml_collections', 'clu')

for _name in HIDDEN:
  # A None entry makes `import NAME` raise ImportError, as on a machine without it.
  sys.modules.setdefault(_name, None)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import throughput  # noqa: E402

# pylint: enable=g-import-not-at-top,wrong-import-position

DEFAULTS = [
    '--models=se_resnet50,resnet50,se_resnext50_32x4d,resnext50_32x4d',
    '--batch=256',
    '--image_size=224',
    '--dtype=bfloat16',
    '--stride_in_1x1=false',
    '--steps=10',
    '--warmup=3',
    '--rounds=3',
    '--eval=false',
    '--timm',
    f'--torch_python={sys.executable}',
    # Builds no further model after this; what was built is still timed and reported, so the
    # whole run (timm, compilation, timing) stays inside 8 minutes on one H200.
    '--deadline_s=330',
    '--title=Training throughput on one GPU: se_flax and timm',
]


def imported_hidden():
  """Hidden packages that something imported anyway (a real module now sits in sys.modules)."""
  return sorted({
      name.split('.')[0]
      for name, mod in sys.modules.items()
      if name.split('.')[0] in HIDDEN and mod is not None and not getattr(mod, 'STAND_IN', False)
  })


def main():
  notes = [
      f'run by benchmarks/gpu_driver.py with {", ".join(HIDDEN)} made unimportable',
      lambda: 'hidden packages imported anyway: ' + (', '.join(imported_hidden()) or 'none')
  ]
  throughput.main(DEFAULTS + sys.argv[1:], notes=notes)
  if imported_hidden():
    sys.exit(f'error: {", ".join(imported_hidden())} got imported; the GPU machine lacks them')


if __name__ == '__main__':
  main()
