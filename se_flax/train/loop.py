"""train_and_evaluate: config -> set-up -> state -> steps -> metrics, evaluations, checkpoints.

Read `train_and_evaluate` top to bottom: set-up (setup.py), the state
(resumed, imported weights or fresh), then per step the update and the
periodic actions: the train line, evaluation, the checkpoint, preemption.

Exact resume (docs/design.md#exact-resume). A run stopped at step k and
started again produces the same parameters and the same metrics.jsonl lines
as a run never stopped: the data stream restarts at batch k, and each
checkpoint carries the loop's own state (metrics.TrainWindow.loop_state, and
the training examples taken so far, where the data continue when the batch
size changes on resume).

Failures raise se_flax.errors (se_flax/cli.py turns them into exit codes):
NonFiniteError for a NaN/Inf loss under nan_policy='stop', or a non-finite
state about to be checkpointed under any policy. A SIGTERM ends the run with
errors.EXIT_PREEMPTED after a checkpoint of the current step.

With an EMA of the weights (config.ema.decay > 0) every evaluation runs twice,
on the trained weights ('eval') and on their average ('eval_ema'), and
config.ema.select_best says whose top-1 error ranks the best checkpoint.
"""

import contextlib
import dataclasses
import sys
import time

from absl import logging
from etils import epath
import jax

from se_flax import config_lib
from se_flax import errors
from se_flax import models
from se_flax.data import feed
from se_flax.models import summary as summary_lib
from se_flax.train import checkpoint as ckpt_lib
from se_flax.train import init_from
from se_flax.train import lock as lock_lib
from se_flax.train import metrics as metrics_lib
from se_flax.train import parallel
from se_flax.train import preemption
from se_flax.train import setup as setup_lib
from se_flax.train import state as state_lib
from se_flax.train import step as step_lib


def _say(message, error=False):
  """Progress for people: printed by process 0 only (errors to stderr), and logged."""
  logging.info('%s', message)
  if jax.process_index() == 0:
    print(message, file=sys.stderr if error else sys.stdout, flush=True)


# ---------------------------------------------------------------- training


def train_and_evaluate(config, workdir) -> int:
  """Trains (resuming from WORKDIR/checkpoints when possible) and evaluates; returns an exit code."""
  t_start = time.time()
  with contextlib.ExitStack() as cleanup:
    # Early, so that a SIGTERM during set-up and compilation still exits cleanly.
    cleanup.callback(preemption.install_preemption_handler())
    # Before any data is prepared or anything compiled. A run that fails before it
    # writes anything (data not found, say) removes the directories it created.
    cleanup.callback(ckpt_lib.remove_created, ckpt_lib.check_writable(workdir))
    if jax.process_index() == 0:  # one lock per run
      lock = cleanup.enter_context(lock_lib.WorkdirLock(workdir).acquire())
      if lock.note:
        _say(lock.note)
    run = setup_lib.setup(config, workdir)
    checkpointer = cleanup.enter_context(ckpt_lib.TrainCheckpointer.from_config(workdir, config))
    state = restore_or_init(run, checkpointer)
    start_step = int(state.step)
    loop_state = checkpointer.restore_loop_state(start_step) if start_step else {}
    examples = _Examples(start_step, _examples_taken(checkpointer, loop_state, start_step, config),
                         config.batch_size)
    params_count = _announce(run, state)

    # Batch n+1 is copied to the devices while step n runs.
    batches = parallel.prefetch_to_device(
        feed.train_batches(config.dataset, global_batch_size=config.batch_size, seed=config.seed,
                           start_step=start_step, start_example=examples.at(start_step)), run.mesh)
    writer = cleanup.enter_context(metrics_lib.MetricWriter(workdir, resume_step=start_step
                                                            or None))
    train_step = step_lib.make_train_step(run.model, config, run.mesh, run.schedule,
                                          run.info.num_classes)
    eval_step = step_lib.make_eval_step(run.model, run.mesh, run.info.num_classes)
    window = metrics_lib.TrainWindow(loop_state, batches, config.nan_policy)
    throughput = metrics_lib.Throughput(start_step, config.batch_size)
    profile = _Profile(config.profile_steps, workdir)
    evals = {}

    if preemption.preemption_requested(start_step):
      return _stopped('during set-up (nothing new to save)')
    for step in range(start_step + 1, run.total_steps + 1):
      profile.before(step)
      state, step_metrics = train_step(state, next(batches))
      window.add(step, step_metrics)
      profile.after(step)

      due = _Due.at(step, run)
      if due.anything:
        window.check_finite()  # before anything reads or saves this state
      if due.log:
        values = {**window.summary(reset=due.new_window), **throughput.update(step)}
        writer.write(step, 'train', values)
        _say(metrics_lib.format_progress(step, run.total_steps, values))
        for warning in window.warnings(values):
          _say(warning, error=True)
      if due.eval:
        evals = _evaluate_both(run, state, eval_step, step, writer)
      if due.save:
        best = None
        if due.save_best:  # ranked by the weights config.ema.select_best names
          best = {'top1_error': evals[_selected(run, state)]['top1_error']}
        _save(checkpointer, step, state, config, best, window, examples.at(step))
      if due.preempt:
        checkpointer.wait_until_finished()
        return _stopped(f'saved checkpoint step {step}')
  _report(run, params_count, start_step, evals, time.time() - t_start)
  return errors.EXIT_OK


def _stopped(what) -> int:
  """The line and exit code of a run stopped by SIGTERM (preempted) or Ctrl-C (interrupted)."""
  code, why = ((errors.EXIT_INTERRUPTED, 'Interrupted') if preemption.interrupted() else
               (errors.EXIT_PREEMPTED, 'Preempted'))
  _say(f'{why}: {what}; exiting with code {code}. Re-run the same command to resume.')
  return code


@dataclasses.dataclass(frozen=True)
class _Due:
  """The periodic actions after a step, from the cadences in the config.

  Not clu's periodic actions: these depend on each other and on a preemption
  flag every process asks (docs/design.md#metrics-and-evaluation).
  """
  log: bool  # a train line: every log_every_steps, and at the last step
  new_window: bool  # the window is cut at multiples of log_every_steps only (exact resume)
  eval: bool  # every eval_every steps, and at the last step
  save: bool  # every checkpoint_every_steps, after an evaluation (keep_best), on preemption
  save_best: bool  # the checkpoint carries the eval error that ranks the best
  preempt: bool

  @property
  def anything(self):
    return self.log or self.eval or self.save

  @classmethod
  def at(cls, step, run):
    config, last = run.config, step == run.total_steps
    logged = step % config.log_every_steps == 0
    evaluated = step % run.eval_every == 0 or last
    save_best = evaluated and (config.keep_best or last)
    # Asked on every step, on every process: with several, it is a sync point.
    preempt = not last and preemption.preemption_requested(step)
    return cls(log=logged or last, new_window=logged, eval=evaluated,
               save=step % config.checkpoint_every_steps == 0 or save_best or preempt,
               save_best=save_best, preempt=preempt)


class _Profile:
  """A jax profiler trace of steps (start, stop] of config.profile_steps, into WORKDIR/profile."""

  def __init__(self, steps, workdir):
    self._steps = tuple(steps)
    self._workdir = workdir

  def before(self, step):
    if self._steps and step - 1 == self._steps[0]:
      jax.profiler.start_trace(f'{self._workdir}/profile')

  def after(self, step):
    if self._steps and step == self._steps[1]:
      jax.profiler.stop_trace()


def _save(checkpointer, step, state, config, metrics, window, examples):
  if not state_lib.is_finite(state):
    raise errors.NonFiniteError(
        f'the state at step {step} holds non-finite values (an update that overflowed); it was '
        'not checkpointed. Lower config.learning_rate.')
  checkpointer.save(step, state, config=config, metrics=metrics, loop_state={
      **window.loop_state(), EXAMPLES_KEY: examples
  })


# The loop state's count of the training examples taken up to its step: where the data continue.
EXAMPLES_KEY = 'train_examples'


@dataclasses.dataclass(frozen=True)
class _Examples:
  """Training examples taken up to each step of this run segment: its batch size may differ from
  the earlier segments', so the count is carried on, not recomputed from the step."""
  start_step: int
  at_start: int
  batch_size: int

  def at(self, step: int) -> int:
    return self.at_start + (step - self.start_step) * self.batch_size


def _examples_taken(checkpointer, loop_state, step, config) -> int:
  """The training examples the run took up to checkpoint `step`, as stored with it.

  A checkpoint saved before the count was stored holds `step` batches of the
  batch size in its own config (the current one if that is unreadable).
  """
  if not step:
    return 0
  if EXAMPLES_KEY in loop_state:
    return int(loop_state[EXAMPLES_KEY])
  try:
    batch_size = int(checkpointer.restore_config(step)['batch_size'])
  except Exception as e:  # pylint: disable=broad-exception-caught
    logging.warning(
        'Checkpoint step %d has no readable batch size (%s); the data continue at '
        'step times the current one.', step, e)
    batch_size = config.batch_size
  return step * batch_size


def _announce(run, state):
  """Prints the run's one-line description; returns the parameter count."""
  config, info = run.config, run.info
  params_count = summary_lib.count_params(state.params)
  logging.info('Parameters:\n%s', metrics_lib.parameter_overview(state.params))
  _say(f'{config.model.name}: {params_count:,} parameters; {config.dataset.name} '
       f'({info.num_train} train / {info.num_eval} eval images, {info.num_classes} classes); '
       f'{run.total_steps} steps of global batch {config.batch_size} on {jax.device_count()} '
       f'device(s), {jax.process_count()} process(es)')
  return params_count


def _report(run, params_count, start_step, evals, seconds):
  if not evals:  # a run resumed at its last step did nothing
    return
  weights = 'ema' if 'ema' in evals and run.config.ema.select_best == 'ema' else 'raw'
  eval_metrics = evals[weights]
  rows = [('model', run.config.model.name), ('parameters', f'{params_count:,}'),
          ('dataset', f'{run.config.dataset.name} ({run.config.dataset.eval_split}: '
           f'{int(eval_metrics["count"])} images)'),
          ('steps', f'{run.total_steps} ({run.total_steps - start_step} this run)'),
          ('time', metrics_lib.format_duration(seconds)),
          ('test top-1 accuracy', f'{100 * (1 - eval_metrics["top1_error"]):.2f}%'),
          ('test top-5 accuracy', f'{100 * (1 - eval_metrics["top5_error"]):.2f}%')]
  if 'ema' in evals:
    other = 'raw' if weights == 'ema' else 'ema'
    rows.append(('weights', f'{_WEIGHTS[weights]} (config.ema.select_best={weights!r}); '
                 f'{_WEIGHTS[other]}: top-1 accuracy '
                 f'{100 * (1 - evals[other]["top1_error"]):.2f}%'))
  width = max(len(k) for k, _ in rows)
  _say('\n'.join(['', 'Run summary'] + [f'  {k:<{width}}  {v}' for k, v in rows]))


# ---------------------------------------------------------------- state


def restore(run, checkpointer, step=None, evaluating=False, compare=True):
  """The checkpoint `step` (default: the newest intact one), or None if there is none.

  `evaluating` (eval, analyze): a config that changes the network is refused
  in one line naming the fields, not as another run's workdir. `compare=False`:
  the config is the restored step's own (trained_state), so there is no
  difference to note.

  Raises:
    errors.ConfigError: the checkpoint belongs to another model; the message
      lists the config fields in which the two runs differ.
    errors.CheckpointCorruptError: checkpoints exist, none is readable.
  """
  try:
    state = checkpointer.restore(step=step, target=run.abstract_state())
  except ckpt_lib.CheckpointMismatchError as e:
    changed = models.architecture_differences(_stored_config_differences(run, checkpointer, e.step),
                                              current=run.config)
    if evaluating and changed:
      raise errors.ConfigError(_changed_network_message(e.step, changed)) from e
    raise errors.ConfigError(_other_run_message(run, checkpointer, e.step, str(e))) from e
  if state is not None:
    differences = _stored_config_differences(run, checkpointer, int(state.step))
    changed = models.architecture_differences(differences, current=run.config)
    if changed and evaluating:
      raise errors.ConfigError(_changed_network_message(int(state.step), changed))
    if changed:
      raise errors.ConfigError(_other_run_message(run, checkpointer, int(state.step), ''))
    if differences and compare:
      _say(f'Note: the config differs from checkpoint step {int(state.step)}\'s in:\n' +
           config_lib.format_differences(differences))
  return state


def _stored_config_differences(run, checkpointer, step):
  try:
    stored = checkpointer.restore_config(step)
  except Exception as e:  # pylint: disable=broad-exception-caught
    logging.warning('Checkpoint step %d has no readable config (%s); not compared.', step, e)
    return []
  return config_lib.differences(stored, run.config)


def _changed_network_message(step, changed):
  fields = ', '.join(f'config.{k} ({old!r} stored, {new!r} given)' for k, old, new in changed[:6])
  more = f' and {len(changed) - 6} more' if len(changed) > 6 else ''
  return (f'the config given changes the network of checkpoint step {step}: {fields}{more}. '
          'Leave --config out to use the stored config, or change only fields that leave the '
          'network alone (e.g. --config.eval_batch_size)')


def _other_run_message(run, checkpointer, step, detail):
  differences = _stored_config_differences(run, checkpointer, step) if step is not None else []
  lines = [
      f'--workdir={run.workdir} holds checkpoint step {step} of a different run, which '
      'cannot be resumed with this config.'
  ]
  if differences:
    lines += [
        'The checkpoint\'s config differs from this one in:',
        config_lib.format_differences(differences)
    ]
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
  state = run.initial_state()
  if run.config.get('init_from'):
    _say(f'Initialised from {run.config.init_from}')
  return state


def trained_state(config, workdir, step=None, stored=None):
  """(run, state) for inference: checkpoint `step` (default: the newest), else config.init_from.

  `stored` (eval and analyze without --config, cli.py): a function step ->
  (config stored with that step, step). The run then takes the config of the
  step restored, which is older than `config`'s when the newest state is damaged.
  """
  state = None
  if (epath.Path(workdir) / ckpt_lib.CHECKPOINT_DIR).exists():
    # Read-only: a damaged checkpoint is skipped, never moved; nothing is written.
    with ckpt_lib.TrainCheckpointer.from_config(workdir, config, read_only=True) as checkpointer:
      checkpointer.require_step(step)  # before the data set is read, or prepared
      run = setup_lib.setup(config, workdir)
      state = restore(run, checkpointer, step, evaluating=True, compare=stored is None)
      if stored is not None and state is not None:
        run = _with_own_config(run, stored, int(state.step), checkpointer.directory)
  elif step is not None:
    raise errors.DataError(f'no checkpoint for step {step}: {workdir}/checkpoints does not exist')
  else:
    run = setup_lib.setup(config, workdir)
  if state is None:
    if not config.get('init_from'):
      raise errors.DataError(f'no checkpoint in {workdir}/checkpoints; train first, or set '
                             'config.init_from to imported weights')
    state = init_from.load_pretrained(run.fresh_state(), config.init_from, run.mesh)
  return run, state


def _with_own_config(run, stored, step, directory):
  """`run` set up with the config stored with checkpoint `step`, unless its own is unreadable."""
  try:
    config, _ = stored(step)
  except errors.CheckpointCorruptError:
    _say(f'Checkpoint step {step} has no readable config: using the newest readable one')
    return run
  _say(f'Using the config stored with checkpoint step {step} in {directory}')
  if config_lib.differences(config, run.config):
    run = setup_lib.setup(config, run.workdir)
  return run


# ---------------------------------------------------------------- evaluation

_WEIGHTS = {'raw': 'trained weights', 'ema': 'EMA weights'}


def _selected(run, state):
  """'ema' or 'raw': the weights whose eval error ranks the best checkpoint."""
  return 'ema' if state.has_ema and run.config.ema.select_best == 'ema' else 'raw'


def _evaluate_both(run, state, eval_step, step, writer):
  """{'raw': metrics[, 'ema': metrics]}, written ('eval', 'eval_ema') and printed.

  With an EMA both records carry `selected` (1.0 for the weights that rank
  the best checkpoint); without one the 'eval' record is as it always was.
  """
  evals = {'raw': evaluate(run, state, eval_step)}
  if not state.has_ema:
    writer.write(step, 'eval', evals['raw'])
    _say(_eval_line(step, evals['raw']))
    return evals
  evals['ema'] = evaluate(run, state.ema_weights(), eval_step)
  selected = _selected(run, state)
  for weights, split in (('raw', 'eval'), ('ema', 'eval_ema')):
    writer.write(step, split, {**evals[weights], 'selected': float(weights == selected)})
    line = _eval_line(step, evals[weights], weights)
    _say(line + (f'; best by {weights} weights' if weights == selected else ''))
  return evals


def evaluate(run, state, eval_step) -> dict:
  """Exact top-1/top-5 error over the whole eval split (padded batches are masked)."""
  acc = metrics_lib.MetricAccumulator()
  for batch in feed.eval_batches(run.config.dataset, global_batch_size=run.config.eval_batch_size):
    acc.add(eval_step(state, parallel.global_batch(batch, run.mesh)))
  totals = acc.totals()
  out = metrics_lib.summarize(totals)
  out['count'] = totals.get('count', 0.0)
  # Every image of the split is counted once, so a shortfall is undecodable images.
  out['undecodable_images'] = float(run.info.num_eval - out['count'])
  return out


def _eval_line(step, m, weights=None):
  which = f' ({_WEIGHTS[weights]})' if weights else ''
  line = (f'eval{which} at step {step}: top-1 error {m["top1_error"]:.4f}, top-5 error '
          f'{m["top5_error"]:.4f}, loss {m["loss"]:.4f} ({int(m["count"])} images)')
  if m.get('undecodable_images'):
    line += f'; {int(m["undecodable_images"])} undecodable image(s) skipped'
  return line


def evaluate_checkpoint(config, workdir, step=None, stored=None) -> int:
  """--mode=eval: top-1/top-5 error of a checkpoint (the latest, or `step`); `stored`: see
  trained_state."""
  run, state = trained_state(config, workdir, step, stored)
  eval_step = step_lib.make_eval_step(run.model, run.mesh, run.info.num_classes)
  _say(_checkpoint_eval_line(run, state, evaluate(run, state, eval_step)))
  if state.has_ema:
    _say(_checkpoint_eval_line(run, state, evaluate(run, state.ema_weights(), eval_step), 'ema'))
  return errors.EXIT_OK


def _checkpoint_eval_line(run, state, m, weights=None):
  config = run.config
  which = f' ({_WEIGHTS[weights]})' if weights else ''
  line = (f'{config.model.name} step {int(state.step)}{which} on {config.dataset.name}/'
          f'{config.dataset.eval_split}: top-1 error {m["top1_error"]:.4f} '
          f'(accuracy {100 * (1 - m["top1_error"]):.2f}%), top-5 error {m["top5_error"]:.4f}, '
          f'{int(m["count"])} images')
  if m['undecodable_images']:
    line += f' ({int(m["undecodable_images"])} undecodable image(s) skipped)'
  return line
