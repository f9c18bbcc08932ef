"""Configs that cannot work fail in main.py before anything compiles: exit 2, one line on stderr.

Each message names the config field, the value given and the values allowed.
"""

import pytest

from tests.integration import harness

SE = '--config.model.name=se_cifar_resnet20'
CASES = [
    # id, flags, words the message must hold
    ('unknown model', ['--config.model.name=se_resnet51'],
     ["config.model.name='se_resnet51'", 'se_resnet50', 'cifar_resnet20']),
    ('unknown squeeze', [SE, '--config.model.se.squeeze=median'],
     ["config.model.se.squeeze='median'", "'avg'", "'gather'"]),
    ('unknown gate', [SE, '--config.model.se.gate=swish'],
     ["config.model.se.gate='swish'", "'sigmoid'", "'hard_sigmoid'"]),
    ('r above the channels', [SE, '--config.model.se.reduction=64'],
     ['config.model.se.reduction=64', 'allowed: 1..16']),
    ('r zero', [SE, '--config.model.se.reduction=0'],
     ['config.model.se.reduction=0', 'positive integer']),
    ('gather extent too large',
     [SE, '--config.model.se.squeeze=gather', '--config.model.se.gather_extent=8'
     ], ['config.model.se.gather_extent=8', '4x4 feature map', 'allowed here: [2, 4] or 0']),
    ('batch not divisible', ['--config.batch_size=30'],
     ['config.batch_size=30', '4 devices', 'multiple of 4']),
    ('bn group not dividing the batch', ['--config.bn_group_size=5'],
     ['config.bn_group_size=5', 'divisor of config.batch_size=32']),
    ('negative learning rate', ['--config.learning_rate=-0.1'],
     ['config.learning_rate=-0.1', 'must be positive']),
    ('unknown schedule', ['--config.schedule.name=linear'],
     ["config.schedule.name='linear'", "['step', 'cosine', 'timm_cosine']"]),
    ('warm-up longer than the run', ['--config.schedule.warmup_epochs=100'],
     ['config.schedule.warmup_epochs=100', 'longer than the run', 'allowed: 0 to']),
    ('unknown optimizer', ['--config.optimizer.name=adam'],
     ["config.optimizer.name='adam'", "['sgd', 'adamw', 'lamb']"]),
    ('unknown nan_policy', ['--config.nan_policy=ignore'],
     ["config.nan_policy='ignore'", "['stop', 'skip']"]),
    ('unknown dtype', ['--config.model.dtype=float8'],
     ["config.model.dtype='float8'", "'bfloat16'"]),
    ('label smoothing out of range', ['--config.label_smoothing=1.5'],
     ['config.label_smoothing=1.5', '[0, 1)']),
    ('eval every 0 steps', ['--config.eval_every_steps=0'],
     ['config.eval_every_steps=0', '-1 for once per epoch']),
    ('no checkpoint kept', ['--config.keep_checkpoints=0'],
     ['config.keep_checkpoints=0', 'positive integer']),
    ('unknown dataset', ['--config.dataset.name=mnist'],
     ["config.dataset.name='mnist'", "'digits'", "'imagenet2012'"]),
    ('no such eval split', ['--config.dataset.eval_split=validation'],
     ["config.dataset.eval_split='validation'", 'its splits are: test, train']),
]


@pytest.mark.parametrize('flags, words', [pytest.param(f, w, id=i) for i, f, w in CASES])
def test_bad_config_fails_early_and_clearly(digits_run, tmp_path, flags, words):
  # Four devices, so that a batch of 30 cannot be split.
  code, out, err = digits_run(*flags, devices=4, timeout=120)
  assert code == 2, harness.describe(code, out, err)
  lines = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, err
  for word in words:
    assert word in lines[0], lines[0]
  assert 'Traceback' not in err
  # Failed before training: no step, no checkpoint, no metrics.
  assert 'step 1/' not in out and 'parameters;' not in out
  run = tmp_path / 'run'
  assert not (run / 'checkpoints').exists() and not (run / 'metrics.jsonl').exists()
