"""The imported-weights directory: an Orbax checkpoint of the variables plus model.json.

    DIR/variables    ocp.StandardCheckpointer checkpoint of
                     {'params': ..., 'batch_stats': ...} (float32)
    DIR/model.json   {"model": preset, "num_classes": N,
                      "overrides": {model attributes, "se": {SESpec fields}},
                      "source": {"from": "timm", "timm_name": ..., "weights": path}}

`load_variables` needs no target tree, so the training loop can read the
directory before it has built a model; `model_from_meta` builds that model.
"""

import json
from typing import Any, Dict, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from se_flax import paths
from se_flax.models import registry
from se_flax.models.stored import MODEL_JSON
from se_flax.models.stored import read_meta
from se_flax.models.stored import VARIABLES

COLLECTIONS = ('params', 'batch_stats')


def save_variables(out_dir, variables, model_meta, overwrite: bool = False):
  """Writes `variables` (params and batch_stats) and `model_meta` under `out_dir`."""
  out_dir = paths.resolve(out_dir)  # a local folder or a URL (gs://...)
  unknown = sorted(set(variables) - set(COLLECTIONS))
  if unknown or 'params' not in variables:
    raise ValueError(f'variables must hold {list(COLLECTIONS)}; got {sorted(variables)}')
  target = out_dir / VARIABLES
  if target.exists() and not overwrite:
    raise ValueError(f'--out={str(out_dir)!r} already holds {VARIABLES}/; pass --overwrite to '
                     'replace it')
  out_dir.mkdir(parents=True, exist_ok=True)
  # numpy leaves restore as numpy without a target, on any device layout.
  tree = {k: jax.tree.map(np.asarray, dict(variables[k])) for k in COLLECTIONS if k in variables}
  checkpointer = ocp.StandardCheckpointer()
  try:
    checkpointer.save(target, tree, force=overwrite)
    checkpointer.wait_until_finished()
  finally:
    checkpointer.close()
  meta = dict(model_meta)
  (out_dir / MODEL_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + '\n')


def load_variables(directory) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """(variables, model_meta) from a directory written by `save_variables`; leaves are numpy arrays."""
  directory = paths.resolve(directory)
  meta = read_meta(directory)
  target = directory / VARIABLES
  checkpointer = ocp.StandardCheckpointer()
  try:
    variables = checkpointer.restore(target)
  finally:
    checkpointer.close()
  return dict(variables), meta


def model_from_meta(meta, **overrides):
  """Builds the model `meta` describes; `overrides` (e.g. dtype) take precedence over its own."""
  args = dict(meta.get('overrides', {}))
  args.update(overrides)
  se = args.pop('se', None)
  if isinstance(args.get('stage_sizes'), list):
    args['stage_sizes'] = tuple(args['stage_sizes'])
  return registry.create_model(meta['model'], meta['num_classes'], se=se, **args)
