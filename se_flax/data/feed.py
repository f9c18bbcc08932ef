"""The data entry points of training and evaluation, for every data set, importing no TensorFlow.

The loop and the set-up ask here; the source is chosen by the data set's spec
(se_flax/data/datasets.py) and config.dataset.loader, and imported only when
first used: for data on disk the tf.data pipeline (se_flax/data/pipeline.py)
or the grain loader (se_flax/data/grain_source.py), for a generated data set
the generator (se_flax/data/synthetic.py). Neither a synthetic run nor a grain
run imports TensorFlow. The functions take and return what pipeline's do.
"""

import importlib

from se_flax.data import datasets

DatasetInfo = datasets.DatasetInfo
steps_per_epoch = datasets.steps_per_epoch


def _source(dataset_cfg):
  if datasets.get(dataset_cfg.name).synthetic:
    return importlib.import_module('se_flax.data.synthetic')
  datasets.check_config(dataset_cfg)  # an unknown loader fails here with the allowed names
  return importlib.import_module(datasets.LOADERS[datasets.loader(dataset_cfg)])


def get_info(dataset_cfg) -> DatasetInfo:
  """The data set's facts; see pipeline.get_info."""
  return _source(dataset_cfg).get_info(dataset_cfg)


def train_batches(dataset_cfg, *, start_example=None, **kwargs):
  """This process's training batches (uint8 images); see pipeline.train_batches.

  `start_example`: where the run's stream continues, counted in examples the
  run has taken (a run resumed with another batch size took its earlier steps
  at the old one); None: `start_step` global batches. The synthetic batches
  are drawn per step, not cut from a stream of examples, and start at
  `start_step` alone.
  """
  source = _source(dataset_cfg)
  if start_example is not None and not datasets.get(dataset_cfg.name).synthetic:
    kwargs['start_example'] = start_example
  return source.train_batches(dataset_cfg, **kwargs)


def eval_batches(dataset_cfg, **kwargs):
  """One padded pass over the eval split (normalised float32 images); see pipeline.eval_batches."""
  return _source(dataset_cfg).eval_batches(dataset_cfg, **kwargs)
