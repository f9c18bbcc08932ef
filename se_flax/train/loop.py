"""train_and_evaluate: config -> model + data + optimizer -> state -> steps -> metrics, checkpoints.

Sections: setup; state (fresh, resumed or initialised from imported weights);
the training loop; evaluation; the closing report. Only this module (and the
modes in se_flax/cli.py) reads the config as a whole and writes files.

Exact resume. A run stopped at step k and started again produces the same
parameters and the same metrics.jsonl lines as a run never stopped: the data
stream restarts at batch k (se_flax/data/pipeline.py), and each checkpoint
carries, beside the state, the loop's own state as JSON: the float64 sums of
the metric window since the last multiple of `log_every_steps` (the window is
cut at those multiples only, also across restarts and at the final step) and
the count of undecodable training images so far. A resumed run seeds its
accumulator with those sums, so the first line after the restart adds the
same numbers in the same order as the uninterrupted run did.

Failures end the run with an exit code (se_flax/cli.py maps exceptions):
EXIT_NON_FINITE for a NaN/Inf loss under nan_policy='stop', or a non-finite
state about to be checkpointed under any policy; preemption.PREEMPTED_EXIT_CODE
after SIGTERM (a checkpoint of the current step is written first).
"""

import functools
import math
import sys
import time
from typing import Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from se_flax import validate
from se_flax.data import pipeline
from se_flax.models import summary as summary_lib
from se_flax.train import checkpoint as ckpt_lib
from se_flax.train import metrics as metrics_lib
from se_flax.train import optim
from se_flax.train import parallel
from se_flax.train import preemption
from se_flax.train import state as state_lib
from se_flax.train import step as step_lib
from se_flax.train.init_from import load_pretrained

EXIT_OK = 0
EXIT_NON_FINITE = 3


class NonFiniteError(RuntimeError):
  """The loss or the gradients went NaN/Inf under nan_policy='stop', or the state did."""


def _say(message, error=False):
  """Progress for people: printed by process 0 only (errors to stderr), and logged."""
  logging.info('%s', message)
  if jax.process_index() == 0:
    print(message, file=sys.stderr if error else sys.stdout, flush=True)


def _as_config_error(fn, *args):
  """fn(*args), with the ValueErrors of the data and optimizer checks as ConfigError."""
  try:
    return fn(*args)
  except validate.ConfigError:
    raise
  except ValueError as e:
    raise validate.ConfigError(str(e)) from e


# ---------------------------------------------------------------- setup

class Run:
  """Everything a run builds from its config before the first step."""

  def __init__(self, config, workdir):
    self.config = config
    self.workdir = workdir
    validate.validate(config)  # cheap checks first: nothing below runs on a bad config
    self.info = _as_config_error(pipeline.get_info, config.dataset)
    validate.validate(config, image_shape=self.info.image_shape, num_classes=self.info.num_classes)
    self.mesh = parallel.create_mesh()
    _as_config_error(parallel.check_batch_divisible, config.batch_size, self.mesh)
    self.model = validate.build_model(config, self.info.num_classes)
    self.steps_per_epoch = pipeline.steps_per_epoch(self.info, config.batch_size)
    if config.num_train_steps > 0:
      self.total_steps = int(config.num_train_steps)
    else:
      self.total_steps = max(1, int(math.ceil(config.num_epochs * self.steps_per_epoch)))
    self.eval_every = (config.eval_every_steps if config.eval_every_steps > 0
                       else self.steps_per_epoch)
    epochs = self.total_steps / self.steps_per_epoch
    if round(config.schedule.warmup_epochs * self.steps_per_epoch) > self.total_steps:
      raise validate.ConfigError(
          f'config.schedule.warmup_epochs={config.schedule.warmup_epochs} is longer than the run '
          f'({self.total_steps} steps = {epochs:g} epochs); allowed: 0 to {epochs:g}')
    self.tx, self.schedule = _as_config_error(optim.create_optimizer, config,
                                              self.steps_per_epoch, self.total_steps)
    self.input_shape = (1,) + tuple(self.info.image_shape)

  def abstract_state(self):
    return state_lib.abstract_train_state(self.model, self.input_shape, self.tx, self.mesh)

  def fresh_state(self):
    return state_lib.create_train_state(self.model, jax.random.PRNGKey(self.config.seed),
                                        self.input_shape, self.tx, self.mesh)


# ---------------------------------------------------------------- state

def restore(run, checkpointer, step=None):
  """The checkpoint `step` (default: the newest intact one), or None if there is none.

  Raises:
    validate.ConfigError: the checkpoint belongs to another model; the message
      lists the config fields in which the two runs differ.
    checkpoint.CheckpointCorruptError: checkpoints exist, none is readable.
  """
  try:
    state = checkpointer.restore(step=step, target=run.abstract_state())
  except ckpt_lib.CheckpointMismatchError as e:
    raise validate.ConfigError(_other_run_message(run, checkpointer, e.step, str(e))) from e
  if state is not None:
    differences = _stored_config_differences(run, checkpointer, int(state.step))
    if validate.architecture_differences(differences, current=run.config):
      raise validate.ConfigError(_other_run_message(run, checkpointer, int(state.step), ''))
    if differences:
      _say(f'Note: the config differs from checkpoint step {int(state.step)}\'s in:\n'
           + validate.format_differences(differences))
  return state


def _stored_config_differences(run, checkpointer, step):
  try:
    stored = checkpointer.restore_config(step)
  except Exception as e:  # pylint: disable=broad-exception-caught
    logging.warning('Checkpoint step %d has no readable config (%s); not compared.', step, e)
    return []
  return validate.config_differences(stored, run.config)


def _other_run_message(run, checkpointer, step, detail):
  differences = _stored_config_differences(run, checkpointer, step) if step is not None else []
  lines = [f'--workdir={run.workdir} holds checkpoint step {step} of a different run, which '
           'cannot be resumed with this config.']
  if differences:
    lines += ['The checkpoint\'s config differs from this one in:',
              validate.format_differences(differences)]
  if detail:
    lines.append(f'Details: {detail}')
  lines.append('Use a new --workdir for this config, or run with the checkpoint\'s config.')
  return '\n'.join(lines)


def restore_or_init(run, checkpointer):
  """The latest intact checkpoint, else imported weights (config.init_from), else a fresh state."""
  restored = restore(run, checkpointer)
  if restored is not None:
    _say(f'Resuming from checkpoint step {int(restored.step)} in {checkpointer.directory}')
    return restored
  state = run.fresh_state()
  if run.config.get('init_from'):
    state = _as_config_error(load_pretrained, state, run.config.init_from, run.mesh)
    _say(f'Initialised from {run.config.init_from}')
  return state


def _state_is_finite(state) -> bool:
  """Whether every float in the state is finite; read from this process's replica."""
  for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state)):
    if jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating):
      if not np.isfinite(np.asarray(leaf.addressable_data(0))).all():
        return False
  return True


# ---------------------------------------------------------------- evaluation

def evaluate(run, state, eval_step) -> dict:
  """Exact top-1/top-5 error over the whole eval split (padded batches are masked)."""
  acc = metrics_lib.MetricAccumulator()
  for batch in pipeline.eval_batches(run.config.dataset, global_batch_size=run.config.eval_batch_size):
    acc.add(eval_step(state, parallel.global_batch(batch, run.mesh)))
  totals = acc.totals()
  out = metrics_lib.summarize(totals)
  out['count'] = totals.get('count', 0.0)
  # Every image of the split is counted once, so a shortfall is undecodable images.
  out['undecodable_images'] = float(run.info.num_eval - out['count'])
  return out


def _eval_line(step, m):
  line = (f'eval at step {step}: top-1 error {m["top1_error"]:.4f}, top-5 error '
          f'{m["top5_error"]:.4f}, loss {m["loss"]:.4f} ({int(m["count"])} images)')
  if m.get('undecodable_images'):
    line += f'; {int(m["undecodable_images"])} undecodable image(s) skipped'
  return line


# ---------------------------------------------------------------- training

class _Window:
  """The metric window and the undecodable-image count, continued across restarts."""

  def __init__(self, loop_state, batches):
    self.acc = metrics_lib.MetricAccumulator()
    if loop_state.get('metric_window'):
      self.acc.add(loop_state['metric_window'])
    self._batches = batches
    self._undecodable_before = int(loop_state.get('undecodable_images', 0))
    self._reported = self._undecodable_before

  def undecodable_images(self) -> int:
    """Training images dropped as undecodable since step 0, over all processes."""
    local = int(getattr(self._batches, 'skipped', 0))
    if jax.process_count() > 1:  # every process calls this at the same steps
      local = int(np.sum(multihost_utils.process_allgather(np.int64(local))))
    return self._undecodable_before + local

  def summary(self, reset):
    values = self.acc.summary(reset=reset)
    values['undecodable_images'] = float(self.undecodable_images())
    return values

  def loop_state(self) -> dict:
    return {'metric_window': self.acc.totals(reset=False),
            'undecodable_images': self.undecodable_images()}

  def new_undecodable(self, total) -> int:
    new, self._reported = total - self._reported, total
    return new


def train_and_evaluate(config, workdir) -> int:
  """Trains (resuming from WORKDIR/checkpoints when possible) and evaluates; returns an exit code."""
  t_start = time.time()
  # Early, so that a SIGTERM during set-up and compilation still exits cleanly.
  uninstall = preemption.install_preemption_handler()
  try:
    return _train(config, workdir, t_start)
  finally:
    uninstall()


def _train(config, workdir, t_start):
  validate.validate(config)
  ckpt_lib.check_writable(workdir)  # before any data is prepared or anything compiled
  run = Run(config, workdir)
  checkpointer = ckpt_lib.TrainCheckpointer.from_config(workdir, config)
  try:
    state = restore_or_init(run, checkpointer)
    start_step = int(state.step)
    loop_state = checkpointer.restore_loop_state(start_step) if start_step else {}
  except BaseException:
    checkpointer.close()
    raise

  params_count = summary_lib.count_params(state.params)
  logging.info('Parameters:\n%s', metrics_lib.parameter_overview(state.params))
  _say(f'{config.model.name}: {params_count:,} parameters; {config.dataset.name} '
       f'({run.info.num_train} train / {run.info.num_eval} eval images, {run.info.num_classes} classes); '
       f'{run.total_steps} steps of global batch {config.batch_size} on {jax.device_count()} '
       f'device(s), {jax.process_count()} process(es)')

  try:
    batches = _as_config_error(functools.partial(
        pipeline.train_batches, config.dataset, global_batch_size=config.batch_size,
        seed=config.seed, start_step=start_step))
    writer = metrics_lib.MetricWriter(workdir, resume_step=start_step if start_step else None)
  except BaseException:
    checkpointer.close()
    raise
  train_step = step_lib.make_train_step(run.model, config, run.mesh, run.schedule,
                                        run.info.num_classes)
  eval_step = step_lib.make_eval_step(run.model, run.mesh, run.info.num_classes)
  window = _Window(loop_state, batches)
  throughput = metrics_lib.Throughput(start_step, config.batch_size)
  profile = tuple(config.profile_steps)
  eval_metrics: dict = {}
  previous: Optional[tuple] = None   # (step, metrics) of the last step, checked one step late
  step = start_step
  exit_code = EXIT_OK

  def save(metrics=None):
    if not _state_is_finite(state):
      raise NonFiniteError(f'the state at step {step} holds non-finite values (an update that '
                           'overflowed); it was not checkpointed. Lower config.learning_rate.')
    checkpointer.save(step, state, config=config, metrics=metrics, loop_state=window.loop_state())

  try:
    if preemption.preemption_requested(step):
      _say(f'Preempted during set-up; exiting with code {preemption.PREEMPTED_EXIT_CODE}.')
      exit_code = preemption.PREEMPTED_EXIT_CODE
    while step < run.total_steps and exit_code == EXIT_OK:
      if profile and step == profile[0]:
        jax.profiler.start_trace(f'{workdir}/profile')
      batch = parallel.global_batch(next(batches), run.mesh)
      state, step_metrics = train_step(state, batch)
      step += 1
      window.acc.add(step_metrics)
      # Checking the previous step's flag lets the device run ahead by one step.
      if previous is not None:
        _check_finite(config, *previous)
      previous = (step, step_metrics)
      if profile and step == profile[1]:
        jax.profiler.stop_trace()

      last = step == run.total_steps
      log_now = step % config.log_every_steps == 0
      eval_now = step % run.eval_every == 0 or last
      save_now = step % config.checkpoint_every_steps == 0
      preempted = not last and preemption.preemption_requested(step)
      if log_now or last or eval_now or save_now or preempted:
        _check_finite(config, *previous)  # before anything reads or saves this state
      if log_now or last:
        # The window is cut at multiples of log_every_steps only, so that the
        # line after a restart covers the same steps as without the restart.
        values = window.summary(reset=log_now)
        values.update(throughput.update(step))
        writer.write(step, 'train', values)
        _say(metrics_lib.format_progress(step, run.total_steps, values))
        _report_skips(values, window)
      if eval_now:
        eval_metrics = evaluate(run, state, eval_step)
        writer.write(step, 'eval', eval_metrics)
        _say(_eval_line(step, eval_metrics))
        if config.keep_best or last:
          save(metrics={'top1_error': eval_metrics['top1_error']})
          save_now = False
      if save_now or preempted:
        save()
      if preempted:
        checkpointer.wait_until_finished()
        _say(f'Preempted: saved checkpoint step {step}; exiting with code '
             f'{preemption.PREEMPTED_EXIT_CODE}. Re-run the same command to resume.')
        exit_code = preemption.PREEMPTED_EXIT_CODE
  except NonFiniteError as e:
    _say(f'error: {e}', error=True)
    exit_code = EXIT_NON_FINITE
  finally:
    try:
      checkpointer.wait_until_finished()
    finally:
      checkpointer.close()
      writer.close()

  if exit_code == EXIT_OK:
    _report(run, params_count, start_step, step, eval_metrics, time.time() - t_start)
  return exit_code


def _check_finite(config, step, step_metrics):
  if config.nan_policy == 'stop' and float(step_metrics['finite']) < 1.0:
    values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
    raise NonFiniteError(
        f'non-finite loss or gradients at step {step} (metrics {values}); the update was not '
        'applied and nothing non-finite was checkpointed. Lower config.learning_rate, check the '
        "data, or set config.nan_policy='skip' to skip such updates and count them.")


def _report_skips(values, window):
  if values.get('skipped'):
    _say(f'warning: skipped {int(values["skipped"])} update(s) with a non-finite loss or '
         "gradient in this log interval (config.nan_policy='skip')", error=True)
  new = window.new_undecodable(int(values['undecodable_images']))
  if new:
    _say(f'warning: {new} undecodable training image(s) skipped since the last report '
         f'({int(values["undecodable_images"])} in all)', error=True)


def _report(run, params_count, start_step, step, eval_metrics, seconds):
  if not eval_metrics:
    return
  rows = [('model', run.config.model.name), ('parameters', f'{params_count:,}'),
          ('dataset', f'{run.config.dataset.name} ({run.config.dataset.eval_split}: '
                      f'{int(eval_metrics["count"])} images)'),
          ('steps', f'{step} ({step - start_step} this run)'),
          ('time', metrics_lib.format_duration(seconds)),
          ('test top-1 accuracy', f'{100 * (1 - eval_metrics["top1_error"]):.2f}%'),
          ('test top-5 accuracy', f'{100 * (1 - eval_metrics["top5_error"]):.2f}%')]
  width = max(len(k) for k, _ in rows)
  _say('\n'.join(['', 'Run summary'] + [f'  {k:<{width}}  {v}' for k, v in rows]))


def trained_state(config, workdir, step=None):
  """(run, state) for inference: checkpoint `step` (default: the newest), else config.init_from."""
  run = Run(config, workdir)
  checkpointer = ckpt_lib.TrainCheckpointer.from_config(workdir, config)
  try:
    state = restore(run, checkpointer, step)
  finally:
    checkpointer.close()
  if state is None:
    if not config.get('init_from'):
      raise FileNotFoundError(f'no checkpoint in {workdir}/checkpoints; train first, or set '
                              'config.init_from to imported weights')
    state = _as_config_error(load_pretrained, run.fresh_state(), config.init_from, run.mesh)
  return run, state


def evaluate_checkpoint(config, workdir, step=None) -> int:
  """--mode=eval: top-1/top-5 error of a checkpoint (the latest, or `step`)."""
  run, state = trained_state(config, workdir, step)
  eval_step = step_lib.make_eval_step(run.model, run.mesh, run.info.num_classes)
  m = evaluate(run, state, eval_step)
  line = (f'{config.model.name} step {int(state.step)} on {config.dataset.name}/'
          f'{config.dataset.eval_split}: top-1 error {m["top1_error"]:.4f} '
          f'(accuracy {100 * (1 - m["top1_error"]):.2f}%), top-5 error {m["top5_error"]:.4f}, '
          f'{int(m["count"])} images')
  if m['undecodable_images']:
    line += f' ({int(m["undecodable_images"])} undecodable image(s) skipped)'
  _say(line)
  return EXIT_OK
