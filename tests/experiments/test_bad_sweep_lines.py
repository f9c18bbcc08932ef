"""Bad command lines of the sweep and report tools: one `error:` line, a documented exit code.

Every case runs `python -m experiments.sweep` or `python -m experiments.report`
as a real subprocess; none may print a traceback, start a run, or write
under --root. The cases run in two threads (each is a separate process), and
every test reads its own case's result.
"""

import concurrent.futures
import os
import pathlib
import subprocess
import sys

import pytest

from se_flax import errors

ROOT = str(pathlib.Path(__file__).resolve().parents[2])
CONFIG, WRITE = errors.EXIT_CONFIG_ERROR, errors.EXIT_WRITE_ERROR
RR = ['-m', 'experiments.sweep', 'experiments/reduction_ratio.py', '--dataset=digits']
SQ = ['-m', 'experiments.sweep', 'experiments/squeeze.py', '--dataset=digits']
REPORT = ['-m', 'experiments.report']

# id, arguments ({root}: a directory that does not exist yet, {file}: a file, {ro}: a read-only
# directory, {damaged}: a sweep directory with a truncated manifest), exit code, words the
# error line must hold
CASES = [
    ('parallel 0', [*RR, '--root={root}', '--parallel=0'], CONFIG, ['--parallel=0', '>= 1']),
    ('parallel negative', [*RR, '--root={root}', '--parallel=-2'], CONFIG, ['--parallel=-2']),
    ('max_restarts negative', [*RR, '--root={root}',
                               '--max_restarts=-1'], CONFIG, ['--max_restarts=-1', '>= 0']),
    ('parallel not a number', [*RR, '--root={root}',
                               '--parallel=two'], CONFIG, ['--parallel', "'two'"]),
    ('misspelled option', [*RR, '--root={root}', '--paralel=2'], CONFIG, ['--paralel=2']),
    ('no root', [*RR], CONFIG, ['--root']),
    ('unknown data set', [*RR[:3], '--dataset=mnist', '--root={root}'], CONFIG, ['mnist']),
    ('unknown launcher', [*RR, '--root={root}', '--launcher=ssh'], CONFIG, ['ssh']),
    ('tpu without a name', [*RR, '--root={root}', '--launcher=tpu'], CONFIG, ['--tpu_name']),
    ('no such sweep file', ['-m', 'experiments.sweep', 'experiments/nope.py',
                            '--root={root}'], CONFIG, ['nope.py', 'does not exist']),
    ('root is a file', [*RR, '--root={file}'], CONFIG, ['--root=', 'is a file']),
    ('root below a file', [*RR, '--root={file}/sub'], CONFIG, ['is a file']),
    ('root read-only', [*RR, '--root={ro}/sub'], WRITE, ['not writable']),
    ('set without a value', [*RR, '--root={root}',
                             '--set=num_epochs'], CONFIG, ["--set='num_epochs'", 'FIELD=VALUE']),
    ('set an unknown field', [*RR, '--root={root}',
                              '--set=num_epochz=2'], CONFIG, ['config.num_epochz']),
    ('set the swept field', [*RR, '--root={root}', '--set=model.se.reduction=1000'], CONFIG, [
        '--set=model.se.reduction=1000', 'the sweep varies', "run 'se_reduction=",
        'config.model.se.reduction='
    ]),
    ('set a reduction no stage takes', [*SQ, '--root={root}', '--set=model.se.reduction=1000'],
     CONFIG, ['--set=model.se.reduction=1000', 'config.model.se.reduction=1000']),
    ('set an infinite learning rate', [*RR, '--root={root}', '--set=learning_rate=inf'], CONFIG,
     ['learning_rate', 'finite']),
    ('set NaN epochs', [*RR, '--root={root}',
                        '--set=num_epochs=nan'], CONFIG, ['config.num_epochs=nan']),
    ('set a negative decay', [*RR, '--root={root}', '--set=optimizer.weight_decay=-1.0'], CONFIG,
     ['config.optimizer.weight_decay=-1.0']),
    ('set a bad mix probability', [*RR, '--root={root}',
                                   '--set=mix.prob=2.0'], CONFIG, ['config.mix.prob=2.0']),
    ('set a class the data set lacks', [*RR, '--root={root}', '--set=analysis.classes=(3, 12)'],
     CONFIG, ['config.analysis.classes=(3, 12)', 'digits (0..9)']),
    ('only an unknown run', [*RR, '--root={root}',
                             '--only=se_reduction=3'], CONFIG, ['--only', 'se_reduction=3']),
    ('report without a directory', [*REPORT], CONFIG, ['usage']),
    ('report on a file', [*REPORT, '{file}'], CONFIG, ['is a file']),
    ('report on a missing directory', [*REPORT, '{root}'], CONFIG, ['is missing']),
    ('report on an empty directory', [*REPORT, '{ro}'], CONFIG, ['no sweep manifest']),
    ('report on a damaged manifest', [*REPORT, '{damaged}'], CONFIG,
     ['manifest.json is damaged', 're-run the sweep command']),
]


def _run_case(base, case_id, args):
  if case_id == 'root read-only' and os.geteuid() == 0:
    return None  # root writes to read-only directories: the sweep would start
  where = base / case_id.replace(' ', '_')
  where.mkdir()
  (where / 'file').write_text('not a directory\n')
  (where / 'ro').mkdir()
  (where / 'damaged').mkdir()
  (where / 'damaged' / 'manifest.json').write_text('{"sweep": "reduction_ratio", "ru')
  (where / 'ro').chmod(0o555)
  names = {k: str(where / k) for k in ('root', 'file', 'ro', 'damaged')}
  argv = [a.format(**names) for a in args]
  try:
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={
                              **os.environ, 'JAX_PLATFORMS': 'cpu'
                          })
  finally:
    (where / 'ro').chmod(0o755)
  written = os.path.exists(names['root']) or os.listdir(names['ro'])
  return proc.returncode, proc.stdout, proc.stderr, written


@pytest.fixture(scope='module')
def results(tmp_path_factory):
  base = tmp_path_factory.mktemp('bad_sweep_lines')
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    futures = {c[0]: pool.submit(_run_case, base, c[0], c[1]) for c in CASES}
    return {k: f.result() for k, f in futures.items()}


def test_the_table_is_large_enough():
  assert len(CASES) >= 25
  assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize('case_id, code, words', [(c[0], c[2], c[3]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_sweep_command_line(results, case_id, code, words):
  if results[case_id] is None:
    pytest.skip('root writes to read-only directories')
  returncode, out, err, written = results[case_id]
  assert 'Traceback' not in err, err
  lines = [line for line in err.splitlines() if line.startswith('error: ')]
  assert len(lines) == 1, err
  assert returncode == code, (returncode, err)
  for word in words:
    assert word in lines[0], (word, lines[0])
  assert not written, 'something was written under --root'
  assert 'starting (log:' not in out
