"""Seeded state dicts, identical in the fixture generator (with torch) and the tests (without).

Our backbones have fixed widths (64 * 2**i channels per stage), so even one
unit per stage is millions of parameters: SENet-154's is 33M. Instead of
committing such weights, a fixture records the seed and each tensor's name
and shape, and `state_dict` rebuilds the exact float32 values from them. The
values come from a counter-based hash (splitmix64 in numpy uint64 arithmetic),
not from an RNG stream, so they do not depend on numpy's or torch's versions.
`digest` lets the tests check that they rebuilt what timm was run on.

Only numpy is needed: the generator imports this file by path, the tests as
`tests.convert.fixture_weights`.
"""

import hashlib
import zlib

import numpy as np

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(z):
  """splitmix64's finaliser, in place on a uint64 array (wrapping arithmetic is the point)."""
  tmp = np.empty_like(z)
  with np.errstate(over='ignore'):
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
      np.right_shift(z, np.uint64(shift), out=tmp)
      z ^= tmp
      z *= np.uint64(mult)
    np.right_shift(z, np.uint64(31), out=tmp)
    z ^= tmp
  return z


def uniform(name: str, shape, seed: int) -> np.ndarray:
  """Values in [-1, 1) on a 2**-23 grid (exact in float32), a function of (seed, name, index)."""
  base = (seed * 0x100000001B3 + zlib.crc32(name.encode())) & _MASK
  count = int(np.prod(shape, dtype=np.int64))
  # In-place steps: SENet-154's fixture is 33M values, and temporaries would dominate the time.
  z = np.arange(1, count + 1, dtype=np.uint64)
  with np.errstate(over='ignore'):
    z *= np.uint64(_GOLDEN)
    z += np.uint64(base)
  _mix(z)
  z >>= np.uint64(40)                                       # top 24 bits
  out = z.astype(np.float64)
  out *= 2.0 ** -23
  out -= 1.0
  return out.reshape(shape)


def tensor(key: str, shape, seed: int) -> np.ndarray:
  """The seeded value of state-dict entry `key`, scaled so activations stay of order one."""
  shape = tuple(shape)
  leaf = key.rsplit('.', 1)[-1]
  if leaf == 'num_batches_tracked':
    return np.array(1000 + zlib.crc32(key.encode()) % 1000, dtype=np.int64)
  u = uniform(key, shape, seed)
  if leaf == 'running_mean':
    value = 0.5 * u
  elif leaf == 'running_var':
    value = 1.0 + 0.6 * u                                   # in [0.4, 1.6)
  elif leaf == 'bias':
    value = 0.2 * u                                         # BN shifts and layer biases
  elif leaf == 'weight' and len(shape) == 1:
    value = 1.0 + 0.4 * u                                   # BN scales
  elif leaf == 'weight':
    fan_in = int(np.prod(shape[1:]))
    # He-uniform for convs (ReLU follows), Glorot-like for the classifier.
    gain = 6.0 if len(shape) == 4 else 3.0
    value = np.sqrt(gain / fan_in) * u
  else:
    raise ValueError(f'no seeded rule for state-dict entry {key!r}')
  return value.astype(np.float32)


def state_dict(layout, seed: int) -> dict:
  """{key: array} for a fixture's layout: a list of [key, shape]."""
  return {key: tensor(key, shape, seed) for key, shape in layout}


def digest(tensors: dict) -> str:
  """sha256 over names, dtypes, shapes and bytes, in the dict's order."""
  h = hashlib.sha256()
  for key, value in tensors.items():
    value = np.ascontiguousarray(value)
    h.update(f'{key}|{value.dtype.str}|{value.shape}|'.encode())
    h.update(value.tobytes())
  return h.hexdigest()
