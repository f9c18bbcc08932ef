"""The layout saved beside imported weights: model.json, read without Orbax.

An imported-weights directory (written by `python -m se_flax.convert`, see
se_flax/convert/writer.py) holds

    DIR/variables    the variables, an Orbax checkpoint
    DIR/model.json   {"model": preset, "num_classes": N,
                      "overrides": {model attributes, "se": {SESpec fields}}, "source": {...}}

`models.from_config` reads model.json to build a run's network in the layout
of the weights it starts from (config.init_from); loading the variables
themselves is se_flax/train/init_from.py's job.
"""

import json
from typing import Any, Dict

from se_flax import paths

VARIABLES = 'variables'
MODEL_JSON = 'model.json'


def read_meta(directory) -> Dict[str, Any]:
  """model.json of an imported-weights directory, checking that the variables are there too.

  Raises:
    ValueError: `directory` is not an imported-weights directory.
  """
  directory = paths.resolve(directory)
  meta_path = directory / MODEL_JSON
  if not meta_path.is_file() or not (directory / VARIABLES).is_dir():
    raise ValueError(f'{str(directory)!r} is not an imported-weights directory: it needs '
                     f'{MODEL_JSON} and {VARIABLES}/ (written by python -m se_flax.convert)')
  return json.loads(meta_path.read_text())
