"""Reading PyTorch state dicts into {name: numpy array}.

safetensors files are read with safetensors' numpy backend, so importing them needs no
PyTorch. Pickled state dicts (.pth, .pt, .bin, .ckpt, .tar) need torch, which
the runtime environment does not install (requirements-torch.txt does).
"""

import json
import os
from typing import Dict

import ml_dtypes
import numpy as np
from safetensors import safe_open

SAFETENSORS_SUFFIXES = ('.safetensors',)
TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.ckpt', '.tar')
# Containers that training scripts wrap a state dict in (timm's train.py writes 'state_dict').
_WRAPPER_KEYS = ('state_dict', 'model')


class LoaderError(ValueError):
  pass


def load_state_dict(path) -> Dict[str, np.ndarray]:
  """Reads the tensors of `path` as numpy arrays (bfloat16 is widened to float32)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise LoaderError(f'--weights={path!r} does not exist or is not a file')
  lower = path.lower()
  if lower.endswith(SAFETENSORS_SUFFIXES):
    return _load_safetensors(path)
  if lower.endswith(TORCH_SUFFIXES):
    return _load_torch(path)
  raise LoaderError(f'--weights={path!r}: unknown file type; allowed suffixes: '
                    f'{list(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}')


def _load_safetensors(path):
  if os.path.getsize(path) == 0:
    raise LoaderError(f'--weights={path!r} is empty (0 bytes): download it again')
  try:
    return _read_safetensors(path)
  except LoaderError:
    raise
  except Exception as e:  # pylint: disable=broad-exception-caught
    # safetensors raises its own SafetensorError (no ValueError) for a damaged header.
    raise LoaderError(f'--weights={path!r} is not a readable safetensors file '
                      f'({str(e).splitlines()[0] if str(e) else type(e).__name__}): a cut-short '
                      'download or another format; download it again') from None


def _read_safetensors(path):
  out = {}
  with safe_open(path, framework='np') as f:
    for key in f.keys():
      if f.get_slice(key).get_dtype() == 'BF16':
        # numpy has no bfloat16, so safetensors.numpy cannot build the array; read the bytes instead.
        out[key] = _read_bf16(path, key)
      else:
        out[key] = f.get_tensor(key)
  return out


def _read_bf16(path, key):
  with open(path, 'rb') as fh:
    # safetensors layout: u64 little-endian header size, JSON header, then the raw buffer.
    size = int.from_bytes(fh.read(8), 'little')
    info = json.loads(fh.read(size))[key]
    start, end = info['data_offsets']
    fh.seek(8 + size + start)
    raw = fh.read(end - start)
  return np.frombuffer(raw, dtype=ml_dtypes.bfloat16).reshape(info['shape']).astype(np.float32)


def _load_torch(path):
  try:
    import torch  # optional: only pickled state dicts need it
  except ImportError:
    raise LoaderError(
        f'--weights={path!r} is a pickled PyTorch file, and reading it needs torch, which is not '
        'installed. Either install it (pip install -r requirements-torch.txt), or convert the file '
        'to safetensors where torch is available: python -c "import torch, safetensors.torch as st; '
        f"st.save_file(torch.load('{path}', map_location='cpu'), 'model.safetensors')\" "
        'and pass --weights=model.safetensors') from None
  obj = torch.load(path, map_location='cpu', weights_only=True)
  for key in _WRAPPER_KEYS:
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
      break
  if not isinstance(obj, dict):
    raise LoaderError(f'--weights={path!r} holds a {type(obj).__name__}, not a state dict')
  out, bad = {}, []
  for key, value in obj.items():
    if not torch.is_tensor(value):
      bad.append(key)
      continue
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
      value = value.float()
    out[key] = value.numpy()
  if bad:
    raise LoaderError(f'--weights={path!r}: entries {bad} are not tensors; pass a plain state dict')
  return out
