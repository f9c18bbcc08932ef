r"""Command line: import PyTorch weights as an Orbax checkpoint our models load.

    python -m se_flax.convert --from=timm --model=se_resnet50 \
        --weights=PATH.safetensors --out=DIR [--timm_name=seresnet50] [--num_classes=1000]

`--model` may be omitted when `--timm_name` is given, and `--timm_name` when
`--model` is (a preset's default source: timm's own weights where they exist,
else the Caffe port). `.pth`/`.bin` state dicts need torch; safetensors do
not. Writes DIR/variables and DIR/model.json (see writer.py); the training
loop evaluates or fine-tunes from them with `config.init_from=DIR`.
"""

import argparse
import sys

from se_flax import paths
from se_flax.convert import importer
from se_flax.convert import loaders
from se_flax.convert import timm_names
from se_flax.convert import writer

SOURCES = ('timm',)


def _stage_sizes(text):
  try:
    sizes = tuple(int(n) for n in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'--stage_sizes={text!r} must be comma-separated integers')
  if not sizes or min(sizes) < 1:
    raise argparse.ArgumentTypeError(f'--stage_sizes={text!r} must list positive unit counts')
  return sizes


def parse_args(argv=None):
  parser = argparse.ArgumentParser(prog='python -m se_flax.convert', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--from', dest='source', default='timm', choices=SOURCES,
                      help='where the weights come from')
  parser.add_argument('--model', help='our preset name (default: from --timm_name)')
  parser.add_argument(
      '--timm_name', choices=sorted(timm_names.TIMM_MODELS), metavar='TIMM_NAME',
      help='timm model the weights belong to; one of: ' + ', '.join(sorted(timm_names.TIMM_MODELS)))
  parser.add_argument('--weights', required=True, help='.safetensors, or .pth/.bin with torch')
  parser.add_argument('--out', required=True, help='output directory, local or a URL (gs://...)')
  parser.add_argument('--num_classes', type=int, default=None,
                      help='classifier width (default: read from the checkpoint)')
  parser.add_argument('--stage_sizes', type=_stage_sizes, default=None,
                      help='units per stage, e.g. 1,1,1,1, for a shortened network')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
  args = parser.parse_args(argv)
  if args.model is None and args.timm_name is None:
    parser.error('give --timm_name, --model, or both')
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    preset, timm_name = timm_names.resolve(args.model, args.timm_name)
    state_dict = loaders.load_state_dict(args.weights)
    variables, meta = importer.convert_state_dict(state_dict, timm_name, model=preset,
                                                  num_classes=args.num_classes,
                                                  stage_sizes=args.stage_sizes,
                                                  weights=paths.resolve_str(args.weights))
    writer.save_variables(args.out, variables, meta, overwrite=args.overwrite)
  except ValueError as e:  # MappingError and LoaderError are ValueErrors
    print(f'error: {e}', file=sys.stderr)
    return 1
  count = sum(v.size for v in _leaves(variables.get('params', {})))
  print(f'imported timm {timm_name!r} as {preset!r} ({meta["num_classes"]} classes, '
        f'{count:,} parameters, {len(state_dict)} tensors read) into {args.out}')
  return 0


def _leaves(tree):
  for value in tree.values():
    if isinstance(value, dict):
      yield from _leaves(value)
    else:
      yield value


if __name__ == '__main__':
  sys.exit(main())
