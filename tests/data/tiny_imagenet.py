"""A few generated JPEGs in the real ILSVRC2012 archive layout, for tfds's imagenet2012 builder.

The tfds builder (tensorflow_datasets/datasets/imagenet2012) reads two tars
from its manual_dir:

* ILSVRC2012_img_train.tar holds one tar per synset, `n01440764.tar`, whose
  members `n01440764_<k>.JPEG` are that synset's images; the label is the
  inner tar's name;
* ILSVRC2012_img_val.tar holds `ILSVRC2012_val_00000001.JPEG`, ... The labels
  are not in the archive: the builder sorts the member names and pairs them,
  in that order, with the lines of the `validation_labels.txt` it ships, so
  the i-th validation image gets that file's i-th synset.

`make_tiny_imagenet` writes both tars and returns the labels the builder will
assign, so tests can check them against what the pipeline yields.
"""

import dataclasses
import io
import os
import tarfile

import numpy as np
from PIL import Image

TRAIN_TAR = 'ILSVRC2012_img_train.tar'
VAL_TAR = 'ILSVRC2012_img_val.tar'
# The first three synsets of the 1000 (labels 0, 1, 2): tench, goldfish, great white shark.
# Validation images are grey (128, 128, 128).
DEFAULT_SYNSETS = ('n01440764', 'n01443537', 'n01484850')


@dataclasses.dataclass(frozen=True)
class TinyImagenet:
  train: dict  # file name -> synset, decodable train images
  validation: dict  # file name -> synset (from tfds's validation_labels.txt), all images
  corrupt: tuple  # file names (train or validation) whose JPEG bytes are truncated
  colors: dict  # synset -> the RGB colour its train images scatter around


def _jpeg(rng, height, width, color):
  """A JPEG whose colour says its class, with noise so that it is not trivially compressible."""
  image = np.clip(np.asarray(color, np.float64) + rng.normal(0, 20, (height, width, 3)), 0, 255)
  buffer = io.BytesIO()
  Image.fromarray(image.astype(np.uint8)).save(buffer, format='JPEG', quality=90)
  return buffer.getvalue()


def _add(tar, name, data):
  member = tarfile.TarInfo(name)
  member.size = len(data)
  member.mtime = 0
  tar.addfile(member, io.BytesIO(data))


def _tar_bytes(members):
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode='w') as tar:
    for name, data in members:
      _add(tar, name, data)
  return buffer.getvalue()


def validation_synsets(num_val):
  """The synsets tfds assigns to ILSVRC2012_val_00000001.JPEG .. num_val."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  path = tfds.core.tfds_path('datasets/imagenet2012/validation_labels.txt')
  return path.read_text().split()[:num_val]


def make_tiny_imagenet(manual_dir, synsets=DEFAULT_SYNSETS, per_class=4, num_val=6, num_corrupt=0,
                       num_corrupt_val=0, seed=0):
  """Writes ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into `manual_dir`.

  Args:
    manual_dir: directory to write into (created if needed).
    synsets: WordNet ids of the train classes; must be among tfds's 1000 labels.
    per_class: decodable train images per synset.
    num_val: validation images; their labels come from tfds's label file.
    num_corrupt: extra train images, in the first synset, whose JPEG bytes are
      cut in half (undecodable).
    num_corrupt_val: how many of the last validation images are cut in half.
    seed: makes image sizes and pixels reproducible.

  Returns:
    A TinyImagenet with the expected file names and labels.
  """
  os.makedirs(manual_dir, exist_ok=True)
  rng = np.random.RandomState(seed)
  colors = {s: rng.randint(0, 256, 3) for s in synsets}

  def size():
    return int(rng.randint(48, 97)), int(rng.randint(48, 97))

  train, corrupt, inner = {}, [], []
  for synset in synsets:
    members = []
    for k in range(per_class):
      name = f'{synset}_{k + 1}.JPEG'
      members.append((name, _jpeg(rng, *size(), colors[synset])))
      train[name] = synset
    if synset == synsets[0]:
      for k in range(per_class, per_class + num_corrupt):
        name = f'{synset}_{k + 1}.JPEG'
        data = _jpeg(rng, *size(), colors[synset])
        members.append((name, data[:len(data) // 2]))
        corrupt.append(name)
    inner.append((f'{synset}.tar', _tar_bytes(members)))
  with open(os.path.join(manual_dir, TRAIN_TAR), 'wb') as f:
    f.write(_tar_bytes(inner))

  val_names = [f'ILSVRC2012_val_{i + 1:08d}.JPEG' for i in range(num_val)]
  val_members = []
  for i, name in enumerate(val_names):
    data = _jpeg(rng, *size(), (128, 128, 128))
    if i >= num_val - num_corrupt_val:
      data = data[:len(data) // 2]
      corrupt.append(name)
    val_members.append((name, data))
  with open(os.path.join(manual_dir, VAL_TAR), 'wb') as f:
    f.write(_tar_bytes(val_members))
  validation = dict(zip(val_names, validation_synsets(num_val)))
  return TinyImagenet(train=train, validation=validation, corrupt=tuple(corrupt), colors={
      s: tuple(int(v) for v in c) for s, c in colors.items()
  })


def prepare_tiny_imagenet(data_dir, manual_dir):
  """Prepares the tars in `manual_dir` with tfds's own imagenet2012 builder into `data_dir`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  import se_flax.data  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import  (tfds compatibility)
  builder = tfds.builder('imagenet2012', data_dir=os.fspath(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir)))
  return builder


def make_and_prepare(root, **kwargs):
  """(TinyImagenet, data_dir): make_tiny_imagenet(root / 'manual', **kwargs), prepared by
  se_flax's `prepare` into root / 'data' (tfds's TFRecord files and their ArrayRecord copy)."""
  from se_flax.data import prepare  # pylint: disable=g-import-not-at-top

  tiny = make_tiny_imagenet(root / 'manual', **kwargs)
  assert prepare.main(
      ['--dataset=imagenet2012', f'--data_dir={root / "data"}',
       f'--manual_dir={root / "manual"}']) == 0
  return tiny, str(root / 'data')
