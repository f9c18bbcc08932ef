r"""Importing timm / Caffe-ported PyTorch weights as Flax variables.

    python -m se_flax.convert --from=timm --timm_name=seresnet50 \
        --weights=model.safetensors --out=DIR

writes DIR/variables (Orbax) and DIR/model.json; `load_variables(DIR)` reads
them back and `model_from_meta(meta)` builds the matching model.
"""

from se_flax.convert.importer import convert_state_dict
from se_flax.convert.importer import expected_state_dict_shapes
from se_flax.convert.importer import plan_for
from se_flax.convert.loaders import load_state_dict
from se_flax.convert.loaders import LoaderError
from se_flax.convert.mapping import MappingError
from se_flax.convert.timm_names import DEFAULT_TIMM_NAME
from se_flax.convert.timm_names import TIMM_MODELS
from se_flax.convert.writer import load_variables
from se_flax.convert.writer import model_from_meta
from se_flax.convert.writer import save_variables

__all__ = [
    'DEFAULT_TIMM_NAME',
    'LoaderError',
    'MappingError',
    'TIMM_MODELS',
    'convert_state_dict',
    'expected_state_dict_shapes',
    'load_state_dict',
    'load_variables',
    'model_from_meta',
    'plan_for',
    'save_variables',
]
