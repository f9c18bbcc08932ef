"""Backbones with and without SE blocks, by name (registry.py), and built from config.model."""

from se_flax.models.registry import architecture_differences
from se_flax.models.registry import create_model
from se_flax.models.registry import DTYPES
from se_flax.models.registry import from_config
from se_flax.models.registry import has_se
from se_flax.models.registry import list_models
from se_flax.models.registry import plain_twin
from se_flax.models.registry import RESUMABLE_MODEL_FIELDS
from se_flax.models.registry import se_twin
