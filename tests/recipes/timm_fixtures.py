"""Reading what tests/recipes/make_fixtures.py recorded of timm (no torch needed)."""

import json
import pathlib

import numpy as np

FIXTURE_DIR = pathlib.Path(__file__).parent / 'fixtures'


def meta(name: str) -> dict:
  """The JSON file `name` (without '.json')."""
  return json.loads((FIXTURE_DIR / f'{name}.json').read_text())


def array(name: str) -> np.ndarray:
  """The .npy file `name` (without '.npy')."""
  return np.load(FIXTURE_DIR / f'{name}.npy')


def optim_cases() -> list:
  return sorted(p.stem[len('optim_'):] for p in FIXTURE_DIR.glob('optim_*.json'))
