"""Bad command lines of main.py: one `error:` line, a documented exit code, no traceback, no write.

Every case runs main.py as a real subprocess in an existing workdir holding a
checkpoint-like file and a metrics file; the workdir must be byte-for-byte
and mtime-for-mtime the same afterwards. The cases run in a few threads
(each is a separate process), and every test reads its own case's result.
"""

import concurrent.futures
import json
import pathlib
import re
import subprocess
import sys

import pytest

from se_flax import errors
from tests.integration import harness

DIGITS = '--config=configs/digits.py'
CONFIG_ERROR = errors.EXIT_CONFIG_ERROR

# id, arguments ({workdir} is replaced), exit code, words the error line must hold
CASES = [
    ('unknown top-level field', [DIGITS,
                                 '--config.foo=1'], CONFIG_ERROR, ['config.foo', 'has fields']),
    ('field typo suggests', [DIGITS, '--config.model.se.reducton=8'], CONFIG_ERROR,
     ['config.model.se.reducton', 'did you mean config.model.se.reduction']),
    ('nested typo suggests', [DIGITS, '--config.optimizer.weight_decy=0'], CONFIG_ERROR,
     ['did you mean config.optimizer.weight_decay']),
    ('field below a leaf', [DIGITS,
                            '--config.model.name.x=1'], CONFIG_ERROR, ['config.model.name.x']),
    ('int field given text', [DIGITS, '--config.batch_size=abc'], CONFIG_ERROR,
     ['--config.batch_size=abc', 'an integer']),
    ('int field given a float', [DIGITS, '--config.batch_size=1.5'], CONFIG_ERROR,
     ['config.batch_size', 'an integer']),
    ('float field given text', [DIGITS, '--config.learning_rate=fast'], CONFIG_ERROR,
     ['config.learning_rate', 'a number']),
    ('bool field given text', [DIGITS, '--config.keep_best=maybe'], CONFIG_ERROR,
     ['config.keep_best', 'true or false']),
    ('tuple field unbalanced', [DIGITS, '--config.model.se.stages=(0,1'], CONFIG_ERROR,
     ['config.model.se.stages', 'a tuple']),
    ('a group given a value', [DIGITS, '--config.model=3'], CONFIG_ERROR,
     ['config.model is a group of fields', '--config.model.']),
    ('None on a field that cannot be None', [DIGITS, '--config.batch_size=None'], CONFIG_ERROR,
     ['config.batch_size cannot be None', 'an integer']),
    ('config argument unknown', ['--config=configs/digits.py:badkey=1'], CONFIG_ERROR,
     ["'badkey' is unknown", 'known keys']),
    ('config argument typo suggests', ['--config=configs/digits.py:rr=4'], CONFIG_ERROR,
     ["did you mean 'r'"]),
    ('config argument without value', ['--config=configs/digits.py:r'], CONFIG_ERROR,
     ['not key=value']),
    ('config argument of the wrong type', ['--config=configs/digits.py:r=abc'], CONFIG_ERROR,
     ["r='abc'", 'an integer']),
    ('config file missing', ['--config=configs/nope.py'], CONFIG_ERROR,
     ["no config file 'configs/nope.py'", 'configs holds']),
    ('config file typo suggests', ['--config=configs/digitz.py', '--config.seed=1'], CONFIG_ERROR,
     ['did you mean configs/digits.py']),
    ('config file a folder', ['--config=configs/'], CONFIG_ERROR, ['no config file']),
    ('config missing', [], CONFIG_ERROR, ['--config is required for --mode=train']),
    ('eval without config, checkpoint unreadable', ['--mode=eval'], errors.EXIT_CHECKPOINT_CORRUPT,
     ['no readable config in', 'Pass --config=FILE']),
    ('override before the config', ['--config.seed=1', DIGITS], CONFIG_ERROR,
     ['--config.seed comes before --config=FILE']),
    ('unknown mode', [DIGITS, '--mode=bad'], CONFIG_ERROR, ['--mode=bad', "'train'", "'analyze'"]),
    ('unknown flag', [DIGITS, '--bogus'], CONFIG_ERROR, ['unknown flag --bogus']),
    ('flag typo suggests', [DIGITS, '--workdr=/tmp/x'], CONFIG_ERROR, ['did you mean --workdir']),
    ('step not an integer', [DIGITS, '--mode=eval',
                             '--step=x'], CONFIG_ERROR, ['--step=x', 'an integer']),
    ('positional argument', [DIGITS, 'extra'], CONFIG_ERROR, ["unexpected argument(s) ['extra']"]),
    ('missing flag file', [DIGITS,
                           '--flagfile=/nonexistent/flags'], CONFIG_ERROR, ['/nonexistent/flags']),
    ('train without a workdir', [DIGITS], CONFIG_ERROR, ['--workdir is required']),
    ('eval without a workdir', [DIGITS, '--mode=eval'], CONFIG_ERROR, ['--workdir is required']),
    ('unknown model', [DIGITS, '--config.model.name=se_resnet51'], CONFIG_ERROR,
     ["config.model.name='se_resnet51'"]),
    ('unknown squeeze', [DIGITS, '--config.model.se.squeeze=median'], CONFIG_ERROR,
     ["config.model.se.squeeze='median'"]),
    ('stage index out of range', [DIGITS, '--config.model.se.stages=(7,)'], CONFIG_ERROR,
     ['config.model.se.stages']),
    ('no SE stage on an SE model', [DIGITS, '--config.model.se.stages=()'], CONFIG_ERROR,
     ["use the plain preset: config.model.name='cifar_resnet20'"]),
    ('overrides without a config', ['--mode=eval', '--config.eval_batch_size=8'], CONFIG_ERROR,
     ['needs --config=FILE', 'config stored with the checkpoint']),
    ('negative learning rate', [DIGITS, '--config.learning_rate=-1.0'], CONFIG_ERROR,
     ['config.learning_rate=-1.0']),
    ('eval of a missing step', [DIGITS, '--mode=eval',
                                '--step=7'], CONFIG_ERROR, ['no checkpoint', 'step 7']),
    ('a program as the config', ['--config=main.py'], CONFIG_ERROR,
     ['main.py is not a config file', 'get_config()']),
    ('two configs', [DIGITS, '--config=configs/cifar.py'], CONFIG_ERROR,
     ['--config is given 2 times', 'configs/cifar.py']),
    ('a second config in a flag file', [DIGITS, '--flagfile={workdir}/flags'], CONFIG_ERROR,
     ['--config is given 2 times']),
    ('flag file with a misspelled field', ['--flagfile={workdir}/typo_flags'], CONFIG_ERROR,
     ['config.batch_szie', 'did you mean config.batch_size']),
    ('step in train mode', [DIGITS, '--step=3'], CONFIG_ERROR,
     ['--step=3 is for --mode=eval/analyze', 'leave --step out']),
    ('several processes without a coordinator', [DIGITS, '--num_processes=2'], CONFIG_ERROR,
     ['--coordinator_address=HOST:PORT', 'single process']),
    ('process id without a coordinator', [DIGITS, '--process_id=1'], CONFIG_ERROR,
     ['--coordinator_address=HOST:PORT']),
    ('process id out of range',
     [DIGITS, '--coordinator_address=localhost:1', '--num_processes=2',
      '--process_id=2'], CONFIG_ERROR, ['--process_id=2 is out of range', '0 to 1']),
    ('no processes', [DIGITS, '--num_processes=0'], CONFIG_ERROR, ['--num_processes=0']),
    ('topology outside compile', [DIGITS, '--topology=v5p-8'], CONFIG_ERROR,
     ['--topology=v5p-8 is for --mode=compile', 'leave it out']),
    ('lock file of garbage bytes', [DIGITS], CONFIG_ERROR,
     ['another training run is using this workdir', 'delete the lock file']),
    ('field typo inside a config file', ['--config={workdir}/my_config.py'], CONFIG_ERROR,
     ['config.batch_szie is not a field', 'did you mean config.batch_size']),
    ('new field inside a config file', ['--config={workdir}/my_config.py'], CONFIG_ERROR,
     ['config.dataset.color_jitter is not a field', 'se_flax would not read it']),
]
WITH_WORKDIR = {'train without a workdir', 'eval without a workdir'}
# Files a case adds to its workdir, beside the checkpoint-like file and the metrics file.
FILES = {
    'a second config in a flag file': {
        'flags': b'--config=configs/digits.py\n'
    },
    'flag file with a misspelled field': {
        'typo_flags': b'--config=configs/digits.py\n--config.batch_szie=64\n'
    },
    'lock file of garbage bytes': {
        'lock': b'\xff\xfe\x00garbage\x80'
    },
    'field typo inside a config file': {
        'my_config.py':
            (b'from configs import digits\n\n\ndef get_config():\n  c = digits.get_config()\n'
             b'  c.batch_szie = 64\n  return c\n')
    },
    'new field inside a config file': {
        'my_config.py': (b'from configs import digits\n\n\ndef get_config():\n'
                         b'  c = digits.get_config()\n  c.dataset.color_jitter = 0.4\n'
                         b'  return c\n')
    },
}

# Log lines of absl (W/I/E + date), TensorFlow's C++ logging and Python warnings are not errors.
_NOISE = re.compile(r'^([WIE]\d{4} |[WIE]0000 |WARNING|INFO|\S+:\d+: \w*Warning|\s)')


def _error_lines(err):
  return [l for l in err.splitlines() if l.strip() and not _NOISE.match(l)]


def _snapshot(root):
  return {
      str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
      for p in sorted(pathlib.Path(root).rglob('*'))
  }


def _make_workdir(path):
  (path / 'checkpoints' / '3').mkdir(parents=True)
  (path / 'checkpoints' / '3' / 'state').write_text('not a real checkpoint')
  (path / 'metrics.jsonl').write_text('{"step": 3}\n')


def _run_case(root, case_id, args):
  workdir = root / re.sub(r'\W+', '_', case_id)
  _make_workdir(workdir)
  for name, content in FILES.get(case_id, {}).items():
    (workdir / name).write_bytes(content)
  args = [a.replace('{workdir}', str(workdir)) for a in args]
  if case_id not in WITH_WORKDIR:
    args.append(f'--workdir={workdir}')
  before = _snapshot(workdir)
  proc = subprocess.run(
      [sys.executable, str(harness.REPO / 'main.py'), *args],
      # A case that reads data finds none: nothing outside `root` is touched.
      cwd=harness.REPO,
      env=harness.env(devices=1, TFDS_DATA_DIR=root / 'tfds'),
      capture_output=True,
      text=True,
      timeout=300,
      check=False)
  return proc.returncode, proc.stderr, before, _snapshot(workdir)


def _run_all(path):
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    futures = {c[0]: pool.submit(_run_case, path, c[0], c[1]) for c in CASES}
    results = {k: f.result() for k, f in futures.items()}
  (path / 'results.json').write_text(json.dumps(results))


@pytest.fixture(scope='session')
def results(shared_root):
  """{case: (exit code, stderr, workdir before, after)}: every case run once for every worker."""
  path = harness.shared(shared_root, 'bad_command_lines', _run_all)
  return {k: tuple(v) for k, v in json.loads((path / 'results.json').read_text()).items()}


def test_the_table_is_large_enough():
  assert len(CASES) >= 30
  assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize('case_id, code, words',
                         [pytest.param(c[0], c[2], c[3], id=c[0]) for c in CASES])
def test_bad_command_line(results, case_id, code, words):
  returncode, err, before, after = results[case_id]
  assert 'Traceback' not in err, err
  lines = _error_lines(err)
  assert len(lines) == 1 and lines[0].startswith('error: '), err
  assert returncode == code, err
  for word in words:
    assert word in lines[0], (word, lines[0])
  assert after == before, 'the workdir changed'
