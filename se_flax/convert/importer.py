"""timm state dict -> our variables and model description.

The plan of tensors comes from our own model: `jax.eval_shape` of its
initialiser gives every variable's shape, and the family's rules turn each
into the PyTorch name and shape it must come from. A checkpoint converts only
if it matches that plan exactly.
"""

import functools
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from se_flax.convert import mapping
from se_flax.convert import timm_names
from se_flax.convert import writer


def model_meta(timm_name: str, num_classes: int, stage_sizes: Optional[Sequence[int]] = None,
               weights: Optional[str] = None) -> dict:
  """The model.json description of timm model `timm_name` with `num_classes` outputs."""
  entry = timm_names.TIMM_MODELS[timm_name]
  overrides = entry.model_overrides()
  if stage_sizes is not None:
    # Shorter networks built from the same units (tests use one unit per stage).
    overrides['stage_sizes'] = [int(n) for n in stage_sizes]
  return {
      'model': entry.preset,
      'num_classes': int(num_classes),
      'overrides': overrides,
      'source': {
          'from': 'timm',
          'timm_name': timm_name,
          'weights': weights
      },
  }


def abstract_variables(model):
  """Shapes of the model's params and batch_stats, without allocating them."""
  init = functools.partial(model.init, train=False)
  return jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, 224, 224, 3), jnp.float32))


def plan_for(timm_name: str, num_classes: int = 1000,
             stage_sizes: Optional[Sequence[int]] = None) -> mapping.Plan:
  """The tensor plan for `timm_name`: every PyTorch key and shape the checkpoint must hold."""
  meta = model_meta(timm_name, num_classes, stage_sizes)
  rules = timm_names.FAMILIES[timm_names.TIMM_MODELS[timm_name].family]
  return mapping.make_plan(abstract_variables(writer.model_from_meta(meta)), rules)


def expected_state_dict_shapes(timm_name: str, num_classes: int = 1000,
                               stage_sizes: Optional[Sequence[int]] = None) -> dict:
  """PyTorch key -> shape of the full state dict of `timm_name` (BN step counters as ())."""
  return plan_for(timm_name, num_classes, stage_sizes).source_shapes()


def infer_num_classes(state_dict: Mapping[str, np.ndarray], timm_name: str) -> Optional[int]:
  head = timm_names.HEADS[timm_names.TIMM_MODELS[timm_name].family]
  weight = state_dict.get(head)
  return int(np.shape(weight)[0]) if weight is not None and np.ndim(weight) == 2 else None


def convert_state_dict(state_dict: Mapping[str, np.ndarray], timm_name: Optional[str], *,
                       model: Optional[str] = None, num_classes: Optional[int] = None,
                       stage_sizes: Optional[Sequence[int]] = None, weights: Optional[str] = None):
  """Converts a timm state dict; returns (variables, model_meta).

  Args:
    state_dict: PyTorch name -> array, e.g. from `loaders.load_state_dict`.
    timm_name: a key of `timm_names.TIMM_MODELS`, or None to take `model`'s default.
    model: our preset name; must match `timm_name`'s when both are given.
    num_classes: classifier width; by default read from the checkpoint's head.
    stage_sizes: units per stage when the checkpoint is a shortened network.
    weights: the source path, recorded in the metadata.

  Raises:
    MappingError: listing every missing, unexpected and mis-shaped tensor.
    ValueError: unknown or inconsistent names.
  """
  _, timm_name = timm_names.resolve(model, timm_name)
  entry = timm_names.TIMM_MODELS[timm_name]
  if num_classes is None:
    num_classes = infer_num_classes(state_dict, timm_name) or 1000
  meta = model_meta(timm_name, num_classes, stage_sizes, weights)
  plan = mapping.make_plan(abstract_variables(writer.model_from_meta(meta)),
                           timm_names.FAMILIES[entry.family])
  what = f'{weights or "the state dict"} does not match timm {timm_name!r} -> our {entry.preset!r}'
  variables = mapping.apply(state_dict, plan, what,
                            timm_names.family_hint(state_dict, entry.family))
  return variables, meta
