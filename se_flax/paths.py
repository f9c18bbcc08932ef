"""User paths: local files or object-store URLs (gs://, s3://, ...), never mangled.

On a TPU pod the workers share no disk, so the workdir and the tfds data
directory are object-store URLs. `os.path.abspath('gs://b/run')` would make
that `<cwd>/gs:/b/run`, and `open` or `os.makedirs` on it would write a
local file; so every path a user gives goes through `resolve` and is used as
an `etils.epath.Path`, whose backends read and write local disks and object
stores alike (docs/multihost.md, "Object stores").
"""

import os
from typing import Union

from etils import epath

PathLike = Union[str, os.PathLike]


def is_url(path: PathLike) -> bool:
  """True for `scheme://...` (gs://, s3://, ...): a path on an object store."""
  return '://' in os.fspath(path)


def resolve(path: PathLike) -> epath.Path:
  """`path` as an epath.Path: URLs unchanged, local paths with ~ expanded and made absolute."""
  if is_url(path):
    return epath.Path(path)
  return epath.Path(path).expanduser().absolute()


def resolve_str(path: PathLike) -> str:
  """`resolve(path)` as a string, for flags and configs that hold strings."""
  return os.fspath(resolve(path))
