"""A run's start from imported weights (`config.init_from`).

The directory is what `python -m se_flax.convert` writes: the variables and
model.json, whose layout `models.from_config` builds the network in, so weights
never load into a network of another layout. Every parameter and BN statistic
must match the model by path and shape, except the classifier (`fc`), which
keeps its fresh initialisation when the number of classes differs: that is
fine-tuning onto a new label set, and the SE blocks that `config.model.surgery`
puts into a plain network, which keep theirs when the weights are the plain
network's (with `identity_start`, the network starts as the one imported).
"""

from absl import logging
import flax
import jax
import numpy as np

from se_flax import surgery
from se_flax.errors import ConfigError
from se_flax.train import parallel

HEAD = 'fc'


def _merge(fresh, loaded, collection, mismatched, added):
  flat_fresh = flax.traverse_util.flatten_dict(flax.core.unfreeze(fresh), sep='/')
  flat_loaded = flax.traverse_util.flatten_dict(flax.core.unfreeze(loaded), sep='/')
  # SE blocks that surgery (config.model.surgery) put into a plain network keep their fresh
  # initialisation when the weights are the plain network's.
  kept = set(surgery.se_parameter_paths(fresh)) - set(flat_loaded)
  added += sorted(kept)
  missing = sorted(set(flat_fresh) - set(flat_loaded) - kept)
  extra = sorted(set(flat_loaded) - set(flat_fresh))
  if missing or extra:
    raise ConfigError(
        f'config.init_from: {collection} do not match the model: missing {missing[:8]}, '
        f'unexpected {extra[:8]} (a different model or config.model options?)')
  out = {}
  for path, value in flat_fresh.items():
    if path in kept:
      out[path] = value
      continue
    new = np.asarray(flat_loaded[path])
    if new.shape != value.shape:
      if path.split('/')[0] == HEAD:
        mismatched.append(f'{path} {new.shape} -> {value.shape}')
        out[path] = value
        continue
      raise ConfigError(f'config.init_from: {collection}/{path} has shape {new.shape}, the model '
                        f'needs {value.shape}')
    out[path] = new.astype(value.dtype)
  return flax.traverse_util.unflatten_dict(out, sep='/')


def load_pretrained(state, directory, mesh):
  """`state` with params and batch_stats replaced by those saved in `directory`.

  Raises:
    ConfigError: `directory` is not an imported-weights directory, or its
      variables do not fit the model.
  """
  from se_flax.convert.writer import load_variables  # pylint: disable=g-import-not-at-top
  try:
    variables, _ = load_variables(directory)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  mismatched, added = [], []
  params = _merge(state.params, variables['params'], 'params', mismatched, added)
  stats = _merge(state.batch_stats, variables.get('batch_stats', {}), 'batch_stats', mismatched,
                 added)
  if added:
    logging.warning(
        'config.init_from: %d SE variables added by surgery start from their own '
        'initialisation', len(added))
  if mismatched:
    logging.warning('config.init_from: re-initialised the classifier for the new class count: %s',
                    mismatched)
  rep = parallel.replicated(mesh)
  params, stats = jax.device_put((params, stats), rep)
  # The optimizer state is rebuilt for the loaded parameters (momentum starts at zero).
  return state.replace(params=params, batch_stats=stats, opt_state=state.tx.init(params))
