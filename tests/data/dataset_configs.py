"""`config.dataset` for tests, built from configs/default.py as the training code builds it."""

from configs import default


def dataset_config(name, data_dir, **overrides):
  """The default `config.dataset` for data set `name` in `data_dir`, with `overrides`."""
  cfg = default.get_base_config().dataset
  cfg.name = name
  cfg.data_dir = str(data_dir)
  if name == 'digits':
    cfg.image_size, cfg.eval_split, cfg.shuffle_buffer = 8, 'test', 2048
  for key, value in overrides.items():
    setattr(cfg, key, value)
  return cfg
