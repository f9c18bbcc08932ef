"""Evaluation at a resolution other than training's (config.dataset.eval_image_size)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.data import datasets
from se_flax.data import pipeline
from se_flax.errors import ConfigError
from se_flax.models import create_model
from tests.data.dataset_configs import dataset_config


def _images(cfg, batch=4):
  batches = list(pipeline.eval_batches(cfg, global_batch_size=batch))
  mask = np.concatenate([b['mask'] for b in batches]) == 1
  return np.concatenate([b['image'] for b in batches])[mask]


def test_imagenet_eval_crops_at_eval_image_size(imagenet):
  _, data_dir = imagenet
  config = lambda **kw: dataset_config('imagenet2012', data_dir, image_size=32, eval_resize=48, **kw
                                      )
  default = _images(config())
  assert default.shape == (6, 32, 32, 3)
  larger = _images(config(eval_image_size=40))
  assert larger.shape == (6, 40, 40, 3)
  # Both are centre crops of the same short-side-48 image: with 48 - 40 even, the 40 crop
  # is the middle of the 48 crop.
  whole = _images(config(eval_image_size=48))
  np.testing.assert_array_equal(larger, whole[:, 4:44, 4:44])
  np.testing.assert_array_equal(default, whole[:, 8:40, 8:40])


def test_small_images_are_resized_to_eval_image_size(digits_cfg):
  stored = _images(digits_cfg())
  assert stored.shape[1:] == (8, 8, 1)
  larger = _images(digits_cfg(eval_image_size=12))
  assert larger.shape == (stored.shape[0], 12, 12, 1)
  # A bilinear resize keeps each image's mean brightness (up to its edges).
  np.testing.assert_allclose(larger.mean((1, 2, 3)), stored.mean((1, 2, 3)), atol=0.1)
  # Train batches keep the training size.
  train = next(pipeline.train_batches(digits_cfg(eval_image_size=12), global_batch_size=8, seed=0))
  assert train['image'].shape == (8, 8, 8, 1)


def _random_variables(model, input_shape):
  """Variables of the shapes init gives, drawn by numpy (compiling init's RNG takes long on CPU)."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(input_shape))
  rng = np.random.RandomState(0)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']"):
      return np.ones(leaf.shape, leaf.dtype)
    return (0.1 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def test_a_global_pooling_model_evaluates_at_another_size():
  model = create_model('cifar_resnet20', 10, depth=8)
  variables = _random_variables(model, (1, 32, 32, 3))
  apply = jax.jit(lambda x: model.apply(variables, x, train=False))
  noise = np.random.RandomState(0).standard_normal((48, 48, 3)).astype(np.float32)
  small = apply(np.stack([np.ones((32, 32, 3), np.float32), noise[:32, :32]]))
  large = apply(np.stack([np.ones((48, 48, 3), np.float32), noise]))
  assert large.shape == (2, 10) and np.all(np.isfinite(large))
  # The head sees the mean over positions: a constant image gives nearly the same logits at
  # any size (only the zero-padded borders, a smaller share of a larger map, differ).
  np.testing.assert_allclose(small[0], large[0], rtol=0.05, atol=0.05)
  assert not np.allclose(small[1], large[1], atol=1e-3)  # Other content, other logits.


@pytest.mark.parametrize('field, value, message', [
    ('eval_image_size', -1, 'config.dataset.eval_image_size=-1 must be an int >= 0'),
    ('eval_image_size', 288,
     'config.dataset.eval_resize=256 must be an int >= config.dataset.eval_image_size=288'),
])
def test_check_config(field, value, message):
  cfg = dataset_config('imagenet2012', '/unused')
  setattr(cfg, field, value)
  with pytest.raises(ConfigError, match=message):
    datasets.check_config(cfg)
  setattr(cfg, field, 224)
  cfg.eval_resize = 320
  datasets.check_config(cfg)
  cfg.eval_image_size = 288
  datasets.check_config(cfg)  # eval_resize 320 >= the 288 crop.
