"""Two processes with two CPU devices each, meeting through jax.distributed on localhost.

They must compute what one process with four devices computes on the same
global batches (as_processes.py feeds it those), only process 0 may write
metrics, and their checkpoint must restore in a one-process run.
"""

import re
import socket

import numpy as np
import pytest

from tests.integration import harness

STEPS = 6
FLAGS = (f'--config.num_train_steps={STEPS}', '--config.log_every_steps=2',
         '--config.eval_every_steps=3')
GLOO_NOTE = (r'\[Gloo\] Rank \d+ is connected to \d+ peer ranks\. Expected number of connected '
             r'peer ranks is : \d+')
COMPARED = ('loss', 'top1_error', 'top5_error', 'grad_norm', 'learning_rate', 'count')


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start_processes(workdir, data_dir, cache_dir, *flags, count=2, env_extra=None):
  """`count` main.py processes of one run, two CPU devices each."""
  port = free_port()
  return [harness.start(workdir, data_dir, *flags, f'--coordinator_address=127.0.0.1:{port}',
                        f'--num_processes={count}', f'--process_id={i}', devices=2,
                        cache_dir=cache_dir, env_extra=env_extra, log=f'{workdir}.p{i}')
          for i in range(count)]


def assert_close(records, expected):
  assert [(r['step'], r['split']) for r in records] == [(r['step'], r['split']) for r in expected]
  for got, want in zip(records, expected):
    for key in COMPARED:
      if key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=f'{key} {want}')


@pytest.mark.slow
def test_two_processes_equal_one_process_with_four_devices(digits_data, jax_cache, tmp_path):
  # The one-process run goes first: the two processes then find its programs compiled.
  one = tmp_path / 'one'
  code, out, err = harness.run(one, digits_data, *FLAGS, devices=4, cache_dir=jax_cache,
                               script='tests/integration/as_processes.py',
                               env_extra={'EMULATED_PROCESSES': 2})
  assert code == 0, harness.describe(code, out, err)
  assert 'on 4 device(s), 1 process(es)' in out

  workdir = tmp_path / 'two'
  processes = start_processes(workdir, digits_data, jax_cache, *FLAGS)
  results = [harness.finish(p, timeout=400) for p in processes]
  for code, out, err in results:
    assert code == 0, harness.describe(code, out, err)
  assert 'on 4 device(s), 2 process(es)' in results[0][1]
  # gloo's own threads print (interleaved) connection notes; nothing else may come from process 1.
  printed = re.sub(GLOO_NOTE, '', results[1][1]).strip()
  assert not printed, f'process 1 printed {printed[:500]}'
  assert [p.name for p in workdir.iterdir()].count('metrics.jsonl') == 1
  assert len(list((workdir / 'tensorboard').iterdir())) == 1

  assert_close(harness.metric_lines(workdir), harness.metric_lines(one))
  two_params, one_params = harness.checkpoint_arrays(workdir), harness.checkpoint_arrays(one)
  for key in two_params:
    np.testing.assert_allclose(two_params[key], one_params[key], rtol=1e-4, atol=1e-6, err_msg=key)

  # The checkpoint the two processes wrote together restores in one process.
  code, out, err = harness.run(workdir, digits_data, *FLAGS, '--mode=eval', devices=4,
                               cache_dir=jax_cache)
  assert code == 0, harness.describe(code, out, err)
  top1 = float(re.search(r'step 6 on digits/test: top-1 error ([\d.]+)', out).group(1))
  final_eval = [r for r in harness.metric_lines(workdir) if r['split'] == 'eval'][-1]
  assert top1 == pytest.approx(final_eval['top1_error'], abs=1e-4)
  assert ', 360 images' in out
