"""Prepares a data set into a tfds data directory, once, before training.

  python -m se_flax.data.prepare --dataset=imagenet2012 --data_dir=/data/tfds --manual_dir=/data/ilsvrc2012
  python -m se_flax.data.prepare --dataset=cifar10 --data_dir=/data/tfds      # downloads: needs network

A multi-host run needs the data prepared beforehand on shared storage; a
single-process run prepares digits (and ImageNet, from its tars) by itself.
"""

import argparse
import os
import sys

import tensorflow_datasets as tfds

from se_flax.data import sources


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m se_flax.data.prepare', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--dataset', required=True, choices=sources.KNOWN_DATASETS)
  parser.add_argument('--data_dir', default=None, help='tfds data directory (default: tfds\'s)')
  parser.add_argument('--manual_dir', default=None,
                      help='imagenet2012: the folder holding ' + ' and '.join(sources.IMAGENET_TARS))
  args = parser.parse_args(argv)
  data_dir = os.path.expanduser(args.data_dir) if args.data_dir else None
  if data_dir:
    os.makedirs(data_dir, exist_ok=True)
  builder = tfds.builder(args.dataset, data_dir=data_dir)
  if builder.is_prepared():
    print(f'{args.dataset} is already prepared in {builder.data_dir}')
    return 0
  manual_dir = os.path.expanduser(args.manual_dir) if args.manual_dir else None
  if args.dataset == 'imagenet2012':
    manual_dir = manual_dir or os.path.join(data_dir or tfds.core.constants.DATA_DIR,
                                            'downloads', 'manual')
    missing = [t for t in sources.IMAGENET_TARS if not os.path.isfile(os.path.join(manual_dir, t))]
    if missing:
      print(f'error: {", ".join(missing)} not found in --manual_dir={manual_dir}; download both '
            'ILSVRC2012 tars from https://image-net.org and put them there', file=sys.stderr)
      return 2
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  for name, split in builder.info.splits.items():
    print(f'{args.dataset}/{name}: {split.num_examples} examples')
  print(f'prepared in {builder.data_dir}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
