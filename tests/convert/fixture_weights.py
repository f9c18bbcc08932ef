"""Seeded state dicts, identical in the fixture generator (with torch) and the tests (without).

Our backbones have fixed widths (64 * 2**i channels per stage), so even one
unit per stage is millions of parameters: SENet-154's is 33M, its full size
115M. Instead of committing such weights, a fixture records the seed and each
tensor's name and shape (or, at full size, the timm name: timm_layouts.py),
and `state_dict` rebuilds the exact float32 values from them. The
values come from a counter-based hash (splitmix64 in numpy uint64 arithmetic),
not from an RNG stream, so they do not depend on numpy's or torch's versions.
`digest` lets the tests check that they rebuilt what timm was run on.

Only numpy is needed: the generator imports this file by path, the tests as
`tests.convert.fixture_weights`.
"""

import hashlib
import re
import zlib

import numpy as np

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_CHUNK = 1 << 15


def _mix(z, tmp):
  """splitmix64's finaliser, in place on a uint64 array (wrapping arithmetic is the point)."""
  with np.errstate(over='ignore'):
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
      np.right_shift(z, np.uint64(shift), out=tmp)
      z ^= tmp
      z *= np.uint64(mult)
    np.right_shift(z, np.uint64(31), out=tmp)
    z ^= tmp
  return z


def _hash_values(name: str, count: int, seed: int, scale: float, offset: float, dtype):
  """`offset + scale * u` for the counter-hash uniforms u of (seed, name), as `dtype`.

  Works through cache-sized chunks with reused buffers: the full-size fixtures
  rebuild about 10**9 values per test run, and whole-array temporaries (page
  faults, memory traffic) would cost several times the arithmetic. Each value's
  float64 arithmetic does not depend on the chunking, so neither do its bits.
  """
  base = np.uint64((seed * 0x100000001B3 + zlib.crc32(name.encode())) & _MASK)
  out = np.empty(count, dtype)
  chunk = min(count, _CHUNK)
  z, tmp = np.empty(chunk, np.uint64), np.empty(chunk, np.uint64)
  u = np.empty(chunk, np.float64)
  counter = np.arange(1, chunk + 1, dtype=np.uint64)
  for start in range(0, count, _CHUNK):
    n = min(_CHUNK, count - start)
    zn, un = z[:n], u[:n]
    with np.errstate(over='ignore'):
      np.add(counter[:n], np.uint64(start), out=zn)  # index + 1, as in arange(1, count + 1)
      zn *= np.uint64(_GOLDEN)
      zn += base
    _mix(zn, tmp[:n])
    zn >>= np.uint64(40)  # top 24 bits
    un[...] = zn
    un *= 2.0 ** -23
    un -= 1.0
    if scale != 1.0:
      un *= scale
    if offset:
      un += offset
    out[start:start + n] = un
  return out


def uniform(name: str, shape, seed: int) -> np.ndarray:
  """Values in [-1, 1) on a 2**-23 grid (exact in float32), a function of (seed, name, index)."""
  count = int(np.prod(shape, dtype=np.int64))
  return _hash_values(name, count, seed, 1.0, 0.0, np.float64).reshape(shape)


def _rule(key: str, shape):
  """(scale, offset) of entry `key`: its value is offset + scale * uniform(key)."""
  leaf = key.rsplit('.', 1)[-1]
  if leaf == 'running_mean':
    return 0.5, 0.0
  if leaf == 'running_var':
    return 0.6, 1.0  # in [0.4, 1.6)
  if leaf == 'bias':
    return 0.2, 0.0  # BN shifts and layer biases
  if leaf == 'weight' and len(shape) == 1:
    return 0.4, 1.0  # BN scales
  if leaf == 'weight':
    fan_in = int(np.prod(shape[1:]))
    # He-uniform for convs (ReLU follows), Glorot-like for the classifier.
    gain = 6.0 if len(shape) == 4 else 3.0
    return float(np.sqrt(gain / fan_in)), 0.0
  raise ValueError(f'no seeded rule for state-dict entry {key!r}')


def tensor(key: str, shape, seed: int, gain: float = 1.0) -> np.ndarray:
  """The seeded value of state-dict entry `key`, scaled so activations stay of order one.

  `gain` multiplies the value (see `residual_gains`); at 1 it is the plain rule.
  """
  shape = tuple(shape)
  if key.rsplit('.', 1)[-1] == 'num_batches_tracked':
    return np.array(1000 + zlib.crc32(key.encode()) % 1000, dtype=np.int64)
  scale, offset = _rule(key, shape)
  if gain != 1.0:
    scale, offset = gain * scale, gain * offset
  count = int(np.prod(shape, dtype=np.int64))
  return _hash_values(key, count, seed, scale, offset, np.float32).reshape(shape)


_UNIT_BN = re.compile(r'(layer[1-9]\d*\.\d+)\.bn(\d+)\.(weight|bias)$')
_SE_FC1 = re.compile(r'(layer[1-9]\d*\.\d+)\.se(?:_module)?\.fc1\.weight$')


def residual_gains(layout) -> dict:
  """{key: gain} that keeps a full-depth network's activations of order one.

  With the plain rules every residual branch is about as large as its input,
  so the residual stream grows geometrically with depth (1e11 after
  ResNet-152's 50 units) and BN shifts and means stop mattering. Scaling the
  affine parameters of each unit's last BN by 1 / sqrt(units) bounds the
  growth to about (1 + 2 / units) ** units. The SE block reads that damped
  output; its first layer gets back the square root of the factor, so that its
  gates neither flatten towards one value nor saturate. Running statistics keep
  their plain values.
  """
  last_bn = {}
  for key, _ in layout:
    match = _UNIT_BN.match(key)
    if match:
      unit, index = match.group(1), int(match.group(2))
      last_bn[unit] = max(index, last_bn.get(unit, 0))
  if not last_bn:
    return {}
  damping = 1.0 / np.sqrt(len(last_bn))
  gains = {}
  for key, _ in layout:
    match = _UNIT_BN.match(key)
    if match and int(match.group(2)) == last_bn[match.group(1)]:
      gains[key] = damping
    elif _SE_FC1.match(key):
      gains[key] = 1.0 / np.sqrt(damping)
  return gains


def state_dict(layout, seed: int, damp_residuals: bool = False) -> dict:
  """{key: array} for a fixture's layout: a list of [key, shape].

  `damp_residuals` applies `residual_gains`, for networks at full depth.
  """
  gains = residual_gains(layout) if damp_residuals else {}
  return {key: tensor(key, shape, seed, gains.get(key, 1.0)) for key, shape in layout}


def digest(tensors: dict) -> str:
  """sha256 over names, dtypes, shapes and bytes, in the dict's order."""
  h = hashlib.sha256()
  for key, value in tensors.items():
    value = np.ascontiguousarray(value)
    h.update(f'{key}|{value.dtype.str}|{value.shape}|'.encode())
    h.update(value.tobytes())
  return h.hexdigest()
