"""Reading the parity fixtures written by make_fixtures.py."""

import dataclasses
import json
import pathlib

import numpy as np

from tests.convert import fixture_weights
from tests.convert import timm_layouts

FIXTURE_DIR = pathlib.Path(__file__).parent / 'fixtures'
STATE_DICTS = 'timm_state_dicts.json'
FULL = '.full'  # <timm name>.full.json: full-size fixtures


@dataclasses.dataclass
class Fixture:
  meta: dict
  state_dict: dict  # PyTorch name -> float32 / int64 numpy array
  images: np.ndarray  # NHWC, as our models take them
  logits: np.ndarray  # timm's


def names():
  return sorted(p.stem
                for p in FIXTURE_DIR.glob('*.json')
                if p.name != STATE_DICTS and not p.stem.endswith(FULL))


def full_names():
  return sorted(p.stem[:-len(FULL)] for p in FIXTURE_DIR.glob(f'*{FULL}.json'))


def meta(name) -> dict:
  return json.loads((FIXTURE_DIR / f'{name}.json').read_text())


def load(name) -> Fixture:
  meta_ = meta(name)
  state_dict = fixture_weights.state_dict(meta_['layout'], meta_['seed'])
  # The seeded values must be the very ones timm was run on.
  assert fixture_weights.digest(state_dict) == meta_['digest'], f'{name}: seeded weights differ'
  images = np.load(FIXTURE_DIR / meta_['input']).transpose(0, 2, 3, 1)
  return Fixture(meta_, state_dict, images, np.load(FIXTURE_DIR / meta_['logits']))


def load_full(timm_name) -> Fixture:
  """The full-size fixture of `timm_name`: weights and input rebuilt from its seed."""
  meta_ = json.loads((FIXTURE_DIR / f'{timm_name}{FULL}.json').read_text())
  seed = meta_['seed']
  state_dict = fixture_weights.state_dict(timm_layouts.layout(timm_name), seed,
                                          damp_residuals=meta_['damp_residuals'])
  assert fixture_weights.digest(
      state_dict) == meta_['digest'], f'{timm_name}: seeded weights differ'
  images = fixture_weights.uniform('input', meta_['input_shape'], seed).astype(np.float32)
  return Fixture(meta_, state_dict, images.transpose(0, 2, 3, 1),
                 np.load(FIXTURE_DIR / meta_['logits']))


def timm_state_dicts() -> dict:
  return json.loads((FIXTURE_DIR / STATE_DICTS).read_text())


def relative_error(ours, reference) -> float:
  """Largest deviation relative to the largest reference logit."""
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))
