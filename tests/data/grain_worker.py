"""One process of a grain-loader run, for tests: reads its batches and writes what it saw.

  python -m tests.data.grain_worker CONFIG_JSON PROCESS_INDEX PROCESS_COUNT START_STEP STEPS OUT

CONFIG_JSON is `config.dataset` as a JSON object (the test builds it from
configs/default.py; passing it spares each worker importing the model code).
Writes to OUT a JSON object: 'indices', the example indices of this process's
rows, one list per step; 'labels', the labels of those rows; 'tensorflow',
whether reading (the data set's facts, an evaluation batch, the training
batches) imported TensorFlow.
"""

import json
import sys

import ml_collections

from se_flax.data import feed

# Divisible by 1, 2 and 4 processes.
GLOBAL_BATCH = 48
SEED = 7


def main(argv):
  config_json, index, count, start, steps, out = argv
  cfg = ml_collections.ConfigDict(json.loads(config_json))
  index, count = int(index), int(count)
  feed.get_info(cfg)
  next(
      feed.eval_batches(cfg, global_batch_size=GLOBAL_BATCH, process_index=index,
                        process_count=count))
  batches = feed.train_batches(cfg, global_batch_size=GLOBAL_BATCH, seed=SEED,
                               start_step=int(start), process_index=index, process_count=count)
  seen = {'indices': [], 'labels': []}
  for _ in range(int(steps)):
    batch = next(batches)
    seen['indices'].append(batches.indices.tolist())
    seen['labels'].append(batch['label'].tolist())
  seen['tensorflow'] = 'tensorflow' in sys.modules
  with open(out, 'w', encoding='utf-8') as f:
    json.dump(seen, f)


if __name__ == '__main__':
  main(sys.argv[1:])
