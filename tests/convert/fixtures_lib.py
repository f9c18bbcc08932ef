"""Reading the parity fixtures written by make_fixtures.py."""

import dataclasses
import json
import pathlib

import numpy as np

from tests.convert import fixture_weights

FIXTURE_DIR = pathlib.Path(__file__).parent / 'fixtures'
STATE_DICTS = 'timm_state_dicts.json'


@dataclasses.dataclass
class Fixture:
  meta: dict
  state_dict: dict     # PyTorch name -> float32 / int64 numpy array
  images: np.ndarray   # NHWC, as our models take them
  logits: np.ndarray   # timm's


def names():
  return sorted(p.stem for p in FIXTURE_DIR.glob('*.json') if p.name != STATE_DICTS)


def meta(name) -> dict:
  return json.loads((FIXTURE_DIR / f'{name}.json').read_text())


def load(name) -> Fixture:
  meta_ = meta(name)
  state_dict = fixture_weights.state_dict(meta_['layout'], meta_['seed'])
  # The seeded values must be the very ones timm was run on.
  assert fixture_weights.digest(state_dict) == meta_['digest'], f'{name}: seeded weights differ'
  images = np.load(FIXTURE_DIR / meta_['input']).transpose(0, 2, 3, 1)
  return Fixture(meta_, state_dict, images, np.load(FIXTURE_DIR / meta_['logits']))


def timm_state_dicts() -> dict:
  return json.loads((FIXTURE_DIR / STATE_DICTS).read_text())


def relative_error(ours, reference) -> float:
  """Largest deviation relative to the largest reference logit."""
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))
