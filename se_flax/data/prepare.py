"""Prepares a data set into a tfds data directory, once, before training.

  python -m se_flax.data.prepare --dataset=imagenet2012 --data_dir=/data/tfds --manual_dir=/data/ilsvrc2012
  python -m se_flax.data.prepare --dataset=cifar10 --data_dir=/data/tfds      # downloads: needs network

A multi-host run needs the data prepared beforehand on shared storage; a
single-process run prepares digits (and ImageNet, from its tars) by itself.

Besides tfds's TFRecord files, which the tf.data pipeline reads, `prepare`
writes an ArrayRecord copy of every split beside them (the same shards, the
same records, `NAME-SPLIT.array_record-XXXXX-of-YYYYY`) and records it in the
data set's `dataset_info.json` as an alternative file format: what
config.dataset.loader=grain reads through `tfds.data_source`. Running it on a
data set prepared before adds only that copy.

A data set that is downloaded is preceded by a connection probe (a few
seconds) to its host, so an offline machine fails at once with what to do
instead of after minutes of tfds retries. SE_FLAX_DOWNLOAD_PROBE=host:port
probes another address (a proxy, or a test); with HTTPS_PROXY set there is
no probe.
"""

import argparse
import os
import socket
import sys
import urllib.parse

from etils import epath
import tensorflow_datasets as tfds

from se_flax import environment
from se_flax import errors
from se_flax import paths
from se_flax.data import datasets
from se_flax.data import digits  # noqa: F401  # pylint: disable=unused-import  (registers the builder)


def _manual_dir_help():
  return '; '.join(f'{spec.name}: the folder holding {" and ".join(spec.manual_files)}'
                   for spec in datasets.DATASETS.values()
                   if spec.preparation == 'manual')


PROBE_TIMEOUT_SECONDS = 5.0


def _probe_target(builder):
  override = environment.download_probe()
  if override:
    return override
  if os.environ.get('HTTPS_PROXY') or os.environ.get('https_proxy'):
    return None
  host = urllib.parse.urlparse(builder.info.homepage or '').hostname
  return (host, 443) if host else None


def _unreachable(builder):
  """Why the download host cannot be reached, or None if it can (or there is nothing to probe)."""
  target = _probe_target(builder)
  if target is None:
    return None
  try:
    socket.create_connection(target, timeout=PROBE_TIMEOUT_SECONDS).close()
  except OSError as e:
    return f'cannot reach {target[0]}:{target[1]} ({e.strerror or type(e).__name__})'
  return None


def write_array_record(version_dir) -> bool:
  """Writes the ArrayRecord copy of a prepared data set's TFRecord shards; False if it exists.

  Shard by shard and record by record, so that the copy's split sizes, shard
  lengths and example order are the TFRecord files' own; `dataset_info.json`
  names the format last, so an interrupted copy is written again next time.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only to read the TFRecords)
  fmt = tfds.core.FileFormat.ARRAY_RECORD
  builder = tfds.builder_from_directory(version_dir)
  if fmt in builder.info.available_file_formats():
    return False
  adapter = tfds.core.file_adapters.ADAPTER_FOR_FORMAT[fmt]
  tfrecord = tfds.core.FileFormat.TFRECORD.file_suffix
  for split in builder.info.splits.values():
    for path in split.filepaths:
      out = os.fspath(path).replace(f'.{tfrecord}-', f'.{fmt.file_suffix}-')
      records = tf.data.TFRecordDataset(os.fspath(path)).as_numpy_iterator()
      adapter.write_examples(out, ((None, record) for record in records))
  builder.info.add_alternative_file_format(fmt)
  builder.info.write_to_directory(version_dir)
  return True


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m se_flax.data.prepare', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--dataset', required=True,
                      choices=[n for n, s in datasets.DATASETS.items() if not s.synthetic])
  parser.add_argument('--data_dir', default=None,
                      help='tfds data directory, local or a URL (default: tfds\'s)')
  parser.add_argument('--manual_dir', default=None, help=_manual_dir_help())
  args = parser.parse_args(argv)
  spec = datasets.get(args.dataset)
  # A local folder or a URL (gs://...: a pod's shared storage); never made local.
  data_dir = paths.resolve_str(args.data_dir) if args.data_dir else None
  if data_dir:
    epath.Path(data_dir).mkdir(parents=True, exist_ok=True)
  builder = tfds.builder(args.dataset, data_dir=data_dir)
  if builder.is_prepared():
    if write_array_record(builder.data_dir):
      print(f'{args.dataset}: ArrayRecord files written in {builder.data_dir}')
    print(f'{args.dataset} is already prepared in {builder.data_dir}')
    return errors.EXIT_OK
  manual_dir = paths.resolve_str(args.manual_dir) if args.manual_dir else None
  if spec.preparation == 'manual':
    manual_dir = manual_dir or os.fspath(
        epath.Path(data_dir or tfds.core.constants.DATA_DIR) / 'downloads' / 'manual')
    missing = [f for f in spec.manual_files if not (epath.Path(manual_dir) / f).is_file()]
    if missing:
      print(
          f'error: {", ".join(missing)} not found in --manual_dir={manual_dir}; download '
          f'{" and ".join(spec.manual_files)} from {spec.manual_source} and put them there',
          file=sys.stderr)
      return errors.EXIT_CONFIG_ERROR
  if spec.preparation == 'download':
    why = _unreachable(builder)
    if why:
      print(
          f'error: {args.dataset} is downloaded, and {why}. Prepare it on a machine with network '
          f'access (the same command) and copy its {builder.data_dir} folder to the same path '
          f'under --data_dir here, or set HTTPS_PROXY', file=sys.stderr)
      return errors.EXIT_CONFIG_ERROR
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  write_array_record(builder.data_dir)
  for name, split in builder.info.splits.items():
    print(f'{args.dataset}/{name}: {split.num_examples} examples')
  print(f'prepared in {builder.data_dir}')
  return errors.EXIT_OK


if __name__ == '__main__':
  sys.exit(main())
