"""Images/s per CPU core of the ImageNet training pipeline, beside bare JPEG decoding.

The data are generated photographs-like JPEGs at ImageNet's usual sizes (long
side 500: 500x375, 375x500, 500x333, 500x500), about 105 KB each at quality
90 (ImageNet's training JPEGs average about 110 KB), written in the real
ILSVRC2012 tar layout (tests/data/tiny_imagenet.py) and prepared by tfds's own
imagenet2012 builder, so `se_flax.data.pipeline.train_batches` reads exactly
what it reads on ImageNet: TFRecords of stored JPEG bytes.

Each core count in `--cores` runs in its own process pinned to that many
cores (the affinity is set before TensorFlow starts its threads) and times:

* bare `tf.io.decode_jpeg` of the same stored bytes, held in memory, with
  TensorFlow's default DCT and with the pipeline's accurate integer DCT;
* `tf.image.decode_and_crop_jpeg` of the random-size crop window at full
  resolution, and the same window decoded at the libjpeg ratio the pipeline
  uses (`augment.decode_window`: 1/2, 1/4 or 1/8 in the IDCT when the window
  is at least that many times the output);
* the full-resolution crop with antialiased resize, flip and normalisation
  (the augmentation before the ratio decode), and `augment.imagenet_train`
  (ratio decode, resize, flip, uint8), still on bytes in memory;
* the crop at the libjpeg ratio resized to 224, without the flip and uint8;
* the pipeline itself: `train_batches` (read, shuffle, decode the crop,
  resize to 224, flip, batch uint8), with the same tf.data options, and again
  with a constant image in place of the crop: its reading, shuffling and
  batching alone;
* RandAugment's cost: `augment.imagenet_train` and `train_batches` again with
  timm's rand-m7-mstd0.5 (2 ops at magnitude 7, noise std 0.5) on the uint8 crop
  (`se_flax.data.randaugment`);
* the grain loader (config.dataset.loader='grain'): `train_batches` over the
  ArrayRecord copy (read, shuffle, libjpeg-turbo's reduced-scale decode down
  to the crop's last rows through simplejpeg, OpenCV resize to 224, flip,
  batch uint8), and Pillow's bare decode of the same bytes in memory, mapped
  by grain with the same threads.

`--stages=loaders` measures only bare decode_jpeg, Pillow's bare decode and
the two loaders (a few minutes of CPU instead of tens).

The report ends with where a training image's time goes: the crop decode, the
resize, uint8 and flip, and the pipeline around them, each the difference of
two measured stages.

  .venv/bin/python benchmarks/input_pipeline.py --cores=1,2 \
      --out=benchmarks/results/input_pipeline_cpu.md
  .venv/bin/python benchmarks/input_pipeline.py --cores=1,2 --stages=loaders \
      --out=benchmarks/results/input_pipeline_grain_cpu.md
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position

MARKER = 'PIPELINE_JSON '
# RandAugment as timm's "rand-m7-mstd0.5": N = 2 ops (timm's default), M = 7, std 0.5.
RANDAUGMENT = dict(num_ops=2, magnitude=7.0, magnitude_std=0.5)
RA_NAME = 'RandAugment rand-m7-mstd0.5'
AUGMENT = 'augment.imagenet_train (ratio decode, resize, flip, uint8)'
PIPELINE = 'pipeline.train_batches (224x224, full augmentation)'
BASE = 'decode_jpeg (TF default DCT)'
RATIO = 'the crop decoded at the libjpeg ratio (augment.decode_window)'
RESIZED = 'the crop at the libjpeg ratio, resized to 224 (float32, no flip)'
EMPTY = 'pipeline.train_batches, a constant image for the crop (read, shuffle, batch only)'
GRAIN = 'grain_source.train_batches (224x224, crop and flip)'
PIL_BASE = 'Pillow decode (in grain threads)'
STAGES = ('all', 'loaders')
# (width, height) and how often each occurs: most ImageNet photos are 500 on the long side.
SIZES = (((500, 375), 0.6), ((375, 500), 0.15), ((500, 333), 0.15), ((500, 500), 0.1))

# ---------------------------------------------------------------- data


def _photo_jpeg(rng, width, height):
  """Smooth colour fields plus grain: compresses like a photograph (about 105 KB at 500x375)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  small = rng.uniform(0, 255, (height // 8, width // 8, 3)).astype(np.uint8)
  base = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), np.float64)
  pixels = np.clip(base + rng.normal(0, 16, base.shape), 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG', quality=90)
  return buffer.getvalue()


def make_photo_imagenet(manual_dir, num_classes, per_class, num_val=8, seed=0):
  """Writes the two ILSVRC2012 tars of `num_classes` x `per_class` photo-sized JPEGs."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from tests.data import tiny_imagenet  # pylint: disable=g-import-not-at-top
  os.makedirs(manual_dir, exist_ok=True)
  rng = np.random.default_rng(seed)
  synsets = tfds.core.tfds_path('datasets/imagenet2012/labels.txt').read_text().split()
  sizes, weights = zip(*SIZES)

  def jpeg():
    return _photo_jpeg(rng, *sizes[rng.choice(len(sizes), p=weights)])

  inner = []
  for synset in synsets[:num_classes]:
    members = [(f'{synset}_{k + 1}.JPEG', jpeg()) for k in range(per_class)]
    inner.append((f'{synset}.tar', tiny_imagenet._tar_bytes(members)))  # pylint: disable=protected-access
  with open(os.path.join(manual_dir, tiny_imagenet.TRAIN_TAR), 'wb') as f:
    f.write(tiny_imagenet._tar_bytes(inner))  # pylint: disable=protected-access
  val = [(f'ILSVRC2012_val_{i + 1:08d}.JPEG', jpeg()) for i in range(num_val)]
  with open(os.path.join(manual_dir, tiny_imagenet.VAL_TAR), 'wb') as f:
    f.write(tiny_imagenet._tar_bytes(val))  # pylint: disable=protected-access


def prepare(data_dir, num_classes, per_class):
  """Generates and prepares the data set in `data_dir` unless it is already there."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from se_flax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  from tests.data import tiny_imagenet  # pylint: disable=g-import-not-at-top
  builder = tfds.builder('imagenet2012', data_dir=data_dir)
  if builder.is_prepared():
    prepare_lib.write_array_record(builder.data_dir)  # for the grain loader, once
    return
  manual = os.path.join(data_dir, 'manual')
  t0 = time.perf_counter()
  make_photo_imagenet(manual, num_classes, per_class)
  t1 = time.perf_counter()
  builder = tiny_imagenet.prepare_tiny_imagenet(data_dir, manual)
  prepare_lib.write_array_record(builder.data_dir)
  print(
      f'generated {num_classes * per_class} JPEGs in {t1 - t0:.0f} s, prepared with tfds in '
      f'{time.perf_counter() - t1:.0f} s', flush=True)


# ---------------------------------------------------------------- one core count


def _options(tf):
  # The pipeline's own tf.data options (se_flax.data.pipeline._options).
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = len(os.sched_getaffinity(0))
  options.threading.max_intra_op_parallelism = 1
  return options


def _rate(iterator, batch, warmup, batches):
  """Images/s over `batches` batches, after `warmup` that drain what was prefetched meanwhile."""
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batch * batches / (time.perf_counter() - start)


def _rates_in_rounds(iterators, batch, warmup, batches, rounds):
  """{name: median images/s}, every iterator measured once per round, in turn.

  A machine shared with other work drifts by tens of percent within a minute;
  measuring everything in each round and taking medians compares the stages
  under the same conditions. An iterator that is not being read stops once its
  prefetch buffers are full, so it does not slow the others; the warm-up of
  each measurement drains those buffers (and the training pipeline's
  read-ahead window) before the clock starts.
  """
  samples = {name: [] for name in iterators}
  for _ in range(rounds):
    for name, iterator in iterators.items():
      samples[name].append(_rate(iterator, batch, warmup, batches))
  return {name: float(np.median(values)) for name, values in samples.items()}, samples


def worker(args):
  """Runs in a process pinned to `args.worker_cores` cores; prints one JSON line of rates."""
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.worker_cores])
  # pylint: disable=g-import-not-at-top
  import grain
  import tensorflow as tf
  import tensorflow_datasets as tfds

  from configs import default
  from se_flax.data import augment
  from se_flax.data import datasets
  from se_flax.data import pipeline
  from se_flax.data import randaugment
  # pylint: enable=g-import-not-at-top

  builder = tfds.builder('imagenet2012', data_dir=args.data_dir)
  imagenet = datasets.get('imagenet2012')
  stored = builder.as_dataset(split='train', decoders={'image': tfds.decode.SkipDecoding()})
  jpegs = [x['image'] for x in stored.as_numpy_iterator()]
  shapes = [tf.image.extract_jpeg_shape(j).numpy() for j in jpegs[:200]]
  facts = {
      'images': len(jpegs),
      'mean_kb': float(np.mean([len(j) for j in jpegs]) / 1024),
      'mean_hw': [float(np.mean([s[0] for s in shapes])),
                  float(np.mean([s[1] for s in shapes]))]
  }

  def bare(fn):
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(jpegs)).enumerate().repeat()
    # A strided max forces the whole decode but costs next to nothing itself.
    ds = ds.map(lambda i, j: tf.reduce_max(fn(i, j)[::16, ::16]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Two batches ahead, as the pipeline (config.dataset.prefetch): the warm-up of each
    # measurement drains what an idle iterator buffered, and no more.
    return iter(ds.batch(args.batch).prefetch(2).with_options(_options(tf)))

  def crop(i, j):
    window = augment.sample_crop_window(tf.image.extract_jpeg_shape(j),
                                        tf.stack([tf.cast(i, tf.int32), 0]))
    return tf.image.decode_and_crop_jpeg(j, window, channels=3, dct_method=augment.JPEG_DCT_METHOD)

  def crop_at_ratio(i, j):
    window = augment.sample_crop_window(tf.image.extract_jpeg_shape(j),
                                        tf.stack([tf.cast(i, tf.int32), 0]))
    return augment.decode_window(j, window, augment.jpeg_ratio(window, 224))

  def exact_augmented(i, j):
    # The full-resolution crop, antialiased resize, flip, normalised on the host: the
    # augmentation before the DCT-domain decode and uint8 output.
    crop_seed, flip_seed = augment.split_seed(tf.stack([tf.cast(i, tf.int32), 0]), 2)
    image = augment.inception_crop(j, crop_seed, 224, fallback_fraction=224 / 256)
    image = augment.random_flip(image, flip_seed)
    return augment.normalize(image, imagenet.mean, imagenet.std)

  def augmented(i, j):
    return augment.imagenet_train(j, tf.stack([tf.cast(i, tf.int32), 0]), 224, 256)

  def rand_augmented(i, j):
    seed = tf.stack([tf.cast(i, tf.int32), 1])
    return randaugment.rand_augment(augmented(i, j), seed, **RANDAUGMENT)

  def pillow_bare():
    # grain's threads as the grain loader uses them; the strided max as in `bare`.
    from PIL import Image  # pylint: disable=g-import-not-at-top
    decode = lambda j: np.asarray(Image.open(io.BytesIO(j)).convert('RGB'))[::16, ::16].max()
    ds = grain.MapDataset.source(jpegs).repeat().map(decode).batch(args.batch)
    cores = len(os.sched_getaffinity(0))
    return iter(
        ds.to_iter_dataset(grain.ReadOptions(num_threads=cores, prefetch_buffer_size=max(2,
                                                                                         cores))))

  cfg = default.get_base_config().dataset
  cfg.name, cfg.data_dir = 'imagenet2012', args.data_dir
  if args.stages == 'loaders':
    iterators = {
        BASE:
            bare(lambda i, j: tf.io.decode_jpeg(j, channels=3)),
        PIL_BASE:
            pillow_bare(),
        PIPELINE:
            pipeline.train_batches(cfg, global_batch_size=args.batch, seed=0, process_index=0,
                                   process_count=1),
        GRAIN:
            _grain_batches(cfg, args.batch),
    }
    rates, samples = _rates_in_rounds(iterators, args.batch, args.warmup, args.batches, args.rounds)
    print(
        MARKER + json.dumps({
            'cores': args.worker_cores,
            'rates': rates,
            'samples': samples,
            'facts': facts
        }), flush=True)
    return
  iterators = {
      BASE:
          bare(lambda i, j: tf.io.decode_jpeg(j, channels=3)),
      'decode_jpeg (INTEGER_ACCURATE)':
          bare(lambda i, j: tf.io.decode_jpeg(j, channels=3, dct_method=augment.JPEG_DCT_METHOD)),
      'decode_and_crop_jpeg (random-size crop, full resolution)':
          bare(crop),
      RATIO:
          bare(crop_at_ratio),
      RESIZED:
          bare(lambda i, j: augment.resize(tf.cast(crop_at_ratio(i, j), tf.float32), 224, antialias=
                                           False)),
      'full-resolution crop, antialiased resize, flip, normalise (float32)':
          bare(exact_augmented),
      AUGMENT:
          bare(augmented),
      f'augment.imagenet_train + {RA_NAME}':
          bare(rand_augmented),
  }
  iterators[PIL_BASE] = pillow_bare()
  iterators[PIPELINE] = pipeline.train_batches(cfg, global_batch_size=args.batch, seed=0,
                                               process_index=0, process_count=1)
  # The pipeline's own cost: everything but the decode and augmentation, which the map
  # traces from augment.TRAIN when the pipeline is built.
  crop = augment.TRAIN['inception_crop']
  augment.TRAIN['inception_crop'] = lambda image, seed, size, *_: tf.fill(
      [size, size, 3], tf.cast(tf.strings.length(image) % 256, tf.uint8))
  try:
    iterators[EMPTY] = pipeline.train_batches(cfg, global_batch_size=args.batch, seed=0,
                                              process_index=0, process_count=1)
  finally:
    augment.TRAIN['inception_crop'] = crop
  cfg.randaugment.update(RANDAUGMENT)
  iterators[f'{PIPELINE} + {RA_NAME}'] = pipeline.train_batches(cfg, global_batch_size=args.batch,
                                                                seed=0, process_index=0,
                                                                process_count=1)
  cfg.randaugment.num_ops = 0
  iterators[GRAIN] = _grain_batches(cfg, args.batch)
  rates, samples = _rates_in_rounds(iterators, args.batch, args.warmup, args.batches, args.rounds)
  print(
      MARKER + json.dumps({
          'cores': args.worker_cores,
          'rates': rates,
          'samples': samples,
          'facts': facts
      }), flush=True)


def _grain_batches(cfg, batch):
  from se_flax.data import grain_source  # pylint: disable=g-import-not-at-top
  grain_cfg = cfg.copy_and_resolve_references()
  grain_cfg.loader = 'grain'
  return grain_source.train_batches(grain_cfg, global_batch_size=batch, seed=0, process_index=0,
                                    process_count=1)


# ---------------------------------------------------------------- main


def _randaugment_cost(results):
  """One line per core count and stage: images/s per core without and with RandAugment."""
  stages = (('augment.imagenet_train', AUGMENT, f'augment.imagenet_train + {RA_NAME}'),
            ('pipeline.train_batches', PIPELINE, f'{PIPELINE} + {RA_NAME}'))
  lines = [f'{RA_NAME} on the uint8 crop, images/s per core:']
  for res in results:
    for name, plain, with_ra in stages:
      plain, with_ra = res['rates'][plain] / res['cores'], res['rates'][with_ra] / res['cores']
      lines.append(f'- {res["cores"]} core(s), {name}: {plain:,.0f} without, {with_ra:,.0f} with '
                   f'({plain / with_ra:.2f}x the time per image)')
  return '\n'.join(lines)


def _loaders(results):
  """One line per core count: each loader per core, and against its own bare decoder."""
  lines = ['The two loaders, images/s per core:']
  for res in results:
    rate = lambda name: res['rates'][name] / res['cores']
    lines.append(f'- {res["cores"]} core(s): tf.data {rate(PIPELINE):,.0f} '
                 f'({rate(PIPELINE) / rate(BASE):.2f}x bare decode_jpeg), grain '
                 f'{rate(GRAIN):,.0f} ({rate(GRAIN) / rate(BASE):.2f}x bare decode_jpeg, '
                 f'{rate(GRAIN) / rate(PIL_BASE):.2f}x bare Pillow decode); grain / tf.data '
                 f'{rate(GRAIN) / rate(PIPELINE):.2f}')
  return '\n'.join(lines)


def _time_per_image(results):
  """Where a training image's time goes, in ms per image on one core, from the measured stages.

  Each line is the difference of two measured stages, so the lines add up to
  the whole pipeline; bare decode_jpeg is the reference the pipeline is held to.
  """
  lines = ['Time per image, ms on one core (differences of the stages above):']
  for res in results:
    ms = {name: 1e3 * res['cores'] / rate for name, rate in res['rates'].items()}
    parts = [('crop decoded at the libjpeg ratio', ms[RATIO]),
             ('resize to 224', ms[RESIZED] - ms[RATIO]),
             ('uint8, flip and seeds', ms[AUGMENT] - ms[RESIZED]),
             ('the pipeline around them', ms[PIPELINE] - ms[AUGMENT])]
    lines.append(f'- {res["cores"]} core(s): ' +
                 ' + '.join(f'{name} {value:.3f}' for name, value in parts) +
                 f' = {ms[PIPELINE]:.3f}, against bare decode_jpeg {ms[BASE]:.3f}; the '
                 f'pipeline alone (constant images) {ms[EMPTY]:.3f}')
  return '\n'.join(lines)


def _args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--cores', default='1,2', help='core counts to pin to, comma separated')
  p.add_argument('--batch', type=int, default=128)
  # The warm-up outlasts what an idle pipeline reads ahead (the next shuffle window of
  # config.dataset.shuffle_buffer = 1024 records), so no round times records read earlier.
  p.add_argument('--warmup', type=int, default=10, help='untimed batches per measurement')
  p.add_argument('--batches', type=int, default=20, help='timed batches per measurement')
  p.add_argument('--rounds', type=int, default=3,
                 help='measurements of every stage, taken in turn; the table gives medians')
  p.add_argument('--classes', type=int, default=8)
  p.add_argument('--per_class', type=int, default=80)
  p.add_argument('--data_dir', default=None,
                 help='where to prepare (and later reuse) the data; default: a temporary dir')
  p.add_argument('--feed_rates', default='1000,3000',
                 help='training rates (img/s) to size the number of cores for')
  p.add_argument('--stages', default='all', choices=STAGES,
                 help="'loaders': bare decodes and the two loaders only")
  p.add_argument('--out', default=None)
  p.add_argument('--note', default='', help='a line for the header (what else loads the machine)')
  p.add_argument('--worker_cores', type=int, default=0, help=argparse.SUPPRESS)
  return p.parse_args(argv)


def main(argv=None):
  args = _args(argv)
  if args.worker_cores:
    worker(args)
    return
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir or tmp
    prepare(data_dir, args.classes, args.per_class)
    results = []
    for cores in [int(c) for c in args.cores.split(',') if c]:
      cmd = [
          sys.executable,
          os.path.abspath(__file__), f'--worker_cores={cores}', f'--data_dir={data_dir}',
          f'--batch={args.batch}', f'--warmup={args.warmup}', f'--batches={args.batches}',
          f'--rounds={args.rounds}', f'--stages={args.stages}'
      ]
      print('running', ' '.join(cmd), flush=True)
      out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
      results += [json.loads(l[len(MARKER):]) for l in out.splitlines() if l.startswith(MARKER)]

  facts = results[0]['facts']
  rows, per_core = [], {}
  for res in results:
    base = res['samples'][BASE]
    for what, rate in res['rates'].items():
      # The ratio of each round (same minute, same load), then the median and range of those.
      ratios = [r / b for r, b in zip(res['samples'][what], base)]
      rows.append([
          res['cores'], what, f'{rate:,.0f}', f'{rate / res["cores"]:,.0f}',
          f'{np.median(ratios):.2f}', f'{min(ratios):.2f}-{max(ratios):.2f}'
      ])
    per_core[res['cores']] = res['rates'][PIPELINE] / res['cores']
  extra = [
      f'data: {facts["images"]} generated JPEGs, mean {facts["mean_kb"]:.0f} KB, mean size '
      f'{facts["mean_hw"][0]:.0f}x{facts["mean_hw"][1]:.0f} (HxW), prepared by tfds imagenet2012',
      f'global batch {args.batch}; {args.warmup} warm-up then {args.batches} timed batches '
      f'per measurement; {args.rounds} rounds measuring every stage in turn (medians); each '
      'core count in its own process, pinned by sched_setaffinity'
  ]
  extra += [args.note] if args.note else []
  text = report.header('ImageNet input pipeline', 'CPU only (the pipeline runs on the host)', [
      'tensorflow-cpu', 'tensorflow', 'tensorflow-datasets', 'grain', 'array-record', 'numpy',
      'pillow', 'simplejpeg', 'opencv-python-headless'
  ], extra)
  text += '\n' + report.table([
      'cores', 'what', 'images/s', 'images/s per core', 'vs bare decode_jpeg', 'range over rounds'
  ], rows) + '\n'
  best = per_core[max(per_core)]
  needs = [
      f'{int(r):,} img/s: about {int(r) / best:.0f} cores' for r in args.feed_rates.split(',') if r
  ]
  text += (f'\nAt {best:,.0f} images/s per core (pipeline, {max(per_core)} cores), feeding ' +
           '; '.join(needs) + '.\n')
  if args.stages == 'all':
    text += '\n' + _time_per_image(results) + '\n'
    text += '\n' + _randaugment_cost(results) + '\n'
  text += '\n' + _loaders(results) + '\n'
  text += f'\ntotal wall time {time.perf_counter() - start:.0f} s\n'
  report.emit(text, args.out)


if __name__ == '__main__':
  main()
