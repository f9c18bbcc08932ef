"""train_and_evaluate: config -> model + data + optimizer -> state -> steps -> metrics, checkpoints.

Sections: setup; state (fresh, resumed or initialised from imported weights);
the training loop; evaluation; the closing report. Only this module (and the
modes in se_flax/cli.py) reads the config as a whole and writes files.
"""

import math
import time
from typing import Optional

from absl import logging
import jax

from se_flax import validate
from se_flax.data import pipeline
from se_flax.models import summary as summary_lib
from se_flax.train import checkpoint as ckpt_lib
from se_flax.train import metrics as metrics_lib
from se_flax.train import optim
from se_flax.train import parallel
from se_flax.train import state as state_lib
from se_flax.train import step as step_lib
from se_flax.train.init_from import load_pretrained

EXIT_OK = 0
EXIT_NON_FINITE = 3


class NonFiniteError(RuntimeError):
  """The loss or the gradients went NaN/Inf under nan_policy='stop'."""


def _say(message):
  """Progress for people: printed by process 0 only, and logged."""
  logging.info('%s', message)
  if jax.process_index() == 0:
    print(message, flush=True)


# ---------------------------------------------------------------- setup

class Run:
  """Everything a run builds from its config before the first step."""

  def __init__(self, config, workdir):
    self.config = config
    self.workdir = workdir
    validate.validate(config)  # cheap checks first: nothing below runs on a bad config
    self.info = pipeline.get_info(config.dataset)
    validate.validate(config, image_shape=self.info.image_shape, num_classes=self.info.num_classes)
    self.mesh = parallel.create_mesh()
    parallel.check_batch_divisible(config.batch_size, self.mesh)
    self.model = validate.build_model(config, self.info.num_classes)
    self.steps_per_epoch = pipeline.steps_per_epoch(self.info, config.batch_size)
    if config.num_train_steps > 0:
      self.total_steps = int(config.num_train_steps)
    else:
      self.total_steps = max(1, int(math.ceil(config.num_epochs * self.steps_per_epoch)))
    self.eval_every = (config.eval_every_steps if config.eval_every_steps > 0
                       else self.steps_per_epoch)
    self.tx, self.schedule = optim.create_optimizer(config, self.steps_per_epoch, self.total_steps)
    self.input_shape = (1,) + tuple(self.info.image_shape)

  def abstract_state(self):
    return state_lib.abstract_train_state(self.model, self.input_shape, self.tx, self.mesh)

  def fresh_state(self):
    return state_lib.create_train_state(self.model, jax.random.PRNGKey(self.config.seed),
                                        self.input_shape, self.tx, self.mesh)


def _restore_or_init(run, checkpointer):
  """The latest intact checkpoint, else imported weights (config.init_from), else a fresh state."""
  restored = checkpointer.restore(target=run.abstract_state())
  if restored is not None:
    _say(f'Resuming from checkpoint step {int(restored.step)} in {checkpointer.directory}')
    return restored
  state = run.fresh_state()
  if run.config.get('init_from'):
    state = load_pretrained(state, run.config.init_from, run.mesh)
    _say(f'Initialised from {run.config.init_from}')
  return state


# ---------------------------------------------------------------- evaluation

def evaluate(run, state, eval_step) -> dict:
  """Exact top-1/top-5 error over the whole eval split (padded batches are masked)."""
  acc = metrics_lib.MetricAccumulator()
  for batch in pipeline.eval_batches(run.config.dataset, global_batch_size=run.config.eval_batch_size):
    acc.add(eval_step(state, parallel.global_batch(batch, run.mesh)))
  totals = acc.totals()
  out = metrics_lib.summarize(totals)
  out['count'] = totals.get('count', 0.0)
  return out


# ---------------------------------------------------------------- training

def train_and_evaluate(config, workdir) -> int:
  """Trains (resuming from WORKDIR/checkpoints when possible) and evaluates; returns an exit code."""
  t_start = time.time()
  run = Run(config, workdir)
  checkpointer = ckpt_lib.TrainCheckpointer.from_config(workdir, config)
  state = _restore_or_init(run, checkpointer)
  start_step = int(state.step)

  params_count = summary_lib.count_params(state.params)
  logging.info('Parameters:\n%s', metrics_lib.parameter_overview(state.params))
  _say(f'{config.model.name}: {params_count:,} parameters; {config.dataset.name} '
       f'({run.info.num_train} train / {run.info.num_eval} eval images, {run.info.num_classes} classes); '
       f'{run.total_steps} steps of global batch {config.batch_size} on {jax.device_count()} '
       f'device(s), {jax.process_count()} process(es)')

  writer = metrics_lib.MetricWriter(workdir, resume_step=start_step if start_step else None)
  train_step = step_lib.make_train_step(run.model, config, run.mesh, run.schedule,
                                        run.info.num_classes)
  eval_step = step_lib.make_eval_step(run.model, run.mesh, run.info.num_classes)
  batches = pipeline.train_batches(config.dataset, global_batch_size=config.batch_size,
                                   seed=config.seed, start_step=start_step)
  uninstall = ckpt_lib.install_preemption_handler()
  acc = metrics_lib.MetricAccumulator()
  throughput = metrics_lib.Throughput(start_step, config.batch_size)
  profile = tuple(config.profile_steps)
  eval_metrics: dict = {}
  previous: Optional[tuple] = None   # (step, metrics) of the last step, checked one step late
  step = start_step
  exit_code = EXIT_OK
  try:
    while step < run.total_steps:
      if profile and step == profile[0]:
        jax.profiler.start_trace(f'{workdir}/profile')
      batch = parallel.global_batch(next(batches), run.mesh)
      state, step_metrics = train_step(state, batch)
      step += 1
      acc.add(step_metrics)
      # Checking the previous step's flag lets the device run ahead by one step.
      if previous is not None:
        _check_finite(config, *previous)
      previous = (step, step_metrics)
      if profile and step == profile[1]:
        jax.profiler.stop_trace()

      last = step == run.total_steps
      if step % config.log_every_steps == 0 or last:
        _check_finite(config, *previous)
        values = acc.summary()
        values.update(throughput.update(step))
        writer.write(step, 'train', values)
        _say(metrics_lib.format_progress(step, run.total_steps, values))
      saved_with_eval = False
      if step % run.eval_every == 0 or last:
        eval_metrics = evaluate(run, state, eval_step)
        writer.write(step, 'eval', eval_metrics)
        _say(f'eval at step {step}: top-1 error {eval_metrics["top1_error"]:.4f}, '
             f'top-5 error {eval_metrics["top5_error"]:.4f}, loss {eval_metrics["loss"]:.4f} '
             f'({int(eval_metrics["count"])} images)')
        if config.keep_best or last:
          checkpointer.save(step, state, config=config,
                            metrics={'top1_error': eval_metrics['top1_error']})
          saved_with_eval = True
      if not saved_with_eval and step % config.checkpoint_every_steps == 0:
        checkpointer.save(step, state, config=config)
      if not last and ckpt_lib.preemption_requested(step):
        _check_finite(config, *previous)
        checkpointer.save(step, state, config=config)
        checkpointer.wait_until_finished()
        _say(f'Preempted: saved checkpoint step {step}; exiting with code '
             f'{ckpt_lib.PREEMPTED_EXIT_CODE}. Re-run the same command to resume.')
        exit_code = ckpt_lib.PREEMPTED_EXIT_CODE
        break
  except NonFiniteError as e:
    _say(f'error: {e}')
    exit_code = EXIT_NON_FINITE
  finally:
    checkpointer.wait_until_finished()
    checkpointer.close()
    writer.close()
    uninstall()

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


def evaluate_checkpoint(config, workdir, step=None) -> int:
  """--mode=eval: top-1/top-5 error of a checkpoint (the latest, or `step`)."""
  run = Run(config, workdir)
  checkpointer = ckpt_lib.TrainCheckpointer.from_config(workdir, config)
  try:
    state = checkpointer.restore(step=step, target=run.abstract_state())
  finally:
    checkpointer.close()
  if state is None:
    if not config.get('init_from'):
      raise FileNotFoundError(f'no checkpoint in {workdir}/checkpoints; train first, or set '
                              'config.init_from to imported weights')
    state = load_pretrained(run.fresh_state(), config.init_from, run.mesh)
  eval_step = step_lib.make_eval_step(run.model, run.mesh, run.info.num_classes)
  m = evaluate(run, state, eval_step)
  _say(f'{config.model.name} step {int(state.step)} on {config.dataset.name}/'
       f'{config.dataset.eval_split}: top-1 error {m["top1_error"]:.4f} '
       f'(accuracy {100 * (1 - m["top1_error"]):.2f}%), top-5 error {m["top5_error"]:.4f}, '
       f'{int(m["count"])} images')
  return EXIT_OK

