"""Fault tolerance for `fit`: step backups that a killed run resumes from exactly, and a stop at a
non-finite loss that names the global step.

`StepBackup` writes every N global steps to a temporary folder and renames it into place (a kill never
leaves an unloadable backup) and, on `fit` start, restores the newest one with its global step and its
place in the epoch. `StopOnNonFiniteLoss` ends training at the first NaN/inf loss and keeps the last good
backup. Which worker keeps the backup is `byol_keras.cluster`'s rule, as for every file of a run.
"""

import json
import logging
import math
import os
import shutil

import keras
import numpy as np

from byol_keras import compat
from byol_keras.cluster import is_chief, same_on_every_worker, scratch_dir
from byol_keras.validation import check_positive_int

logger = logging.getLogger(__name__)


_STATE_FILE = "state.json"
_WEIGHTS_FILE = "model.weights.h5"
_PREFIX = "step-"
_TMP_PREFIX = ".tmp-"


def _is_finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # Not a scalar: nothing to judge.


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class StepBackup(keras.callbacks.Callback):
    """Back up the whole training state every N global steps, atomically, and resume from it mid-epoch.

    Why not Keras' `BackupAndRestore`: see `docs/design.md` ("Why StepBackup").

    This callback:

    - saves every `save_every_steps` *global* steps (`optimizer.iterations`, which also drives τ and the
      learning rate), and when training ends, the model's weights and the optimizer's variables (the step
      counter, momenta, a loss scale) with `model.save_weights`, plus `state.json` with the global step,
      the epoch and the number of batches done in it;
    - writes to `backup_dir/.tmp-step-K`, flushes, then renames it to `backup_dir/step-K` and deletes older
      backups, so the newest `step-*` directory is always complete; leftover `.tmp-*` directories of a
      killed write are ignored and removed;
    - never saves after a non-finite loss or when a trainable weight is not finite: the last good backup
      stays;
    - on `fit` start, loads the newest backup, sets the initial epoch and ends the resumed epoch after the
      batches it still had to do, so the run does exactly `epochs × steps_per_epoch` steps and later
      epochs start at the same global steps as in an uninterrupted run;
    - in multi-worker training, every worker saves (saving reads synchronised variables, which takes part
      in collectives) but only the chief writes to `backup_dir`; the others write to a temporary directory
      that is removed. Every worker restores from `backup_dir`, so it must be on a file system that all
      workers read (a shared disk or a bucket); the workers check that they restored the same step.

    The data position: the callback cannot move `fit`'s input. For an exact resume, the input must start
    at the batch the interrupted run would have drawn next, `batches_done(backup.latest_state(),
    steps_per_epoch)`: `byol_keras.data.pretrain_dataset(..., repeat=True, start_batch=that)` does, cheaply
    (each batch is a function of the seed and its position; skipped file names are never read), and
    `byol-pretrain` passes it. A plain `dataset.skip(n)` would be exact too, if every random draw of the
    pipeline were keyed by position, but it makes every skipped batch (decoded, augmented) on the way.
    Without either, the resumed run restarts the data stream: it replays the first batches of the first
    epoch, in the same order, instead of the ones it had not seen.

    Needs a known number of steps per epoch (`steps_per_epoch=` or a dataset of known length) to resume
    mid-epoch; without one, a mid-epoch backup restarts its epoch. The resumed epoch is ended through
    `model.stop_training`, which this callback then resets at that epoch's end: a callback that asks to stop
    at the end of exactly that epoch is overridden (it will ask again at the next).

    Args:
        backup_dir: str, where the chief keeps its backup; used by this run only.
        save_every_steps: positive int, N.
        delete_on_end: bool, remove the backup when `fit` ends normally. Off by default, so that running a
            finished command again does not train again. Defaults to False.

    Example:

    >>> backup = StepBackup("/tmp/run/backup", save_every_steps=500)  # doctest: +SKIP
    >>> model.fit(dataset, epochs=100, steps_per_epoch=390, callbacks=[backup])  # doctest: +SKIP
    """

    def __init__(self, backup_dir, save_every_steps, delete_on_end=False):
        super().__init__()
        if not isinstance(backup_dir, (str, os.PathLike)) or not str(backup_dir):
            raise ValueError(f"`backup_dir` must be a non-empty path. Received: backup_dir={backup_dir!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.save_every_steps = check_positive_int("save_every_steps", save_every_steps)
        self.delete_on_end = bool(delete_on_end)
        self.restored_state = None
        self._scratch = None
        self._epoch = 0
        self._resume_epoch = None
        self._resume_batches = 0
        self._ended_epoch_early = False
        self._last_loss_finite = True
        self._last_saved_step = None

    # -- reading ------------------------------------------------------------------------------------------

    def latest_state(self):
        """The newest complete backup's state, or None (`latest_backup_state` of `backup_dir`)."""
        return latest_backup_state(self.backup_dir)

    # -- fit hooks ------------------------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        strategy = self.model.distribute_strategy
        self._chief = is_chief(strategy)
        if self._chief:
            os.makedirs(self.backup_dir, exist_ok=True)
            for entry in os.listdir(self.backup_dir):
                if entry.startswith(_TMP_PREFIX):  # A write that a kill interrupted.
                    shutil.rmtree(os.path.join(self.backup_dir, entry), ignore_errors=True)
            self._root = self.backup_dir
        else:
            self._scratch = scratch_dir(strategy, prefix="byol-backup")
            self._root = self._scratch
        self._last_loss_finite = True
        self._ended_epoch_early = False
        self._resume_epoch, self._resume_batches = None, 0
        self._last_saved_step = None
        self._position = None
        state = self.latest_state()
        self._agree_across_workers(strategy, state["step"] if state else -1)
        self.restored_state = state
        optimizer = self.model.optimizer
        if state is None:
            self._prev_step = int(keras.ops.convert_to_numpy(optimizer.iterations))
            return
        if optimizer is not None and not optimizer.built:
            # The optimizer's variables (step counter, momenta) must exist to be loaded.
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(state["path"], _WEIGHTS_FILE))
        step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        if step != state["step"]:
            raise ValueError(
                f"The backup in {state['path']!r} says global step {state['step']} but holds an optimizer "
                f"at step {step}; was it written by a different optimizer?"
            )
        epoch, batch = int(state["epoch"]), int(state["batch"])
        steps = self.params.get("steps")
        if batch and steps != state.get("steps_per_epoch"):
            logger.warning(
                "The backup at step %d was written with %s steps per epoch, this run has %s: epoch %d "
                "restarts from its first batch.", step, state.get("steps_per_epoch"), steps, epoch + 1,
            )
            batch = 0
        compat.set_initial_epoch(self.model, epoch)
        self._resume_epoch, self._resume_batches = epoch, batch
        self._last_saved_step = self._prev_step = step
        logger.info(
            "Resumed from %s: global step %d, epoch %d, %d batch(es) of it already done.",
            state["path"], step, epoch + 1, batch,
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        if "loss" in logs:
            self._last_loss_finite = self._last_loss_finite and _is_finite(logs["loss"])
        done = batch + 1 + (self._resume_batches if self._epoch == self._resume_epoch else 0)
        steps = self.params.get("steps")
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self._position = (self._epoch, done)
        # Every time the global step passes a multiple of N (it moves by more than one per call with
        # `steps_per_execution` > 1, and not at all on a step that a loss-scale optimizer skipped).
        if step // self.save_every_steps > self._prev_step // self.save_every_steps:
            self._save(step, self._epoch, done, steps)
        self._prev_step = step
        if self._epoch == self._resume_epoch and self._resume_batches and steps and done >= steps:
            # The resumed epoch is complete: end it here. `fit` only breaks out of an epoch through
            # `stop_training`, which `on_epoch_end` resets so that the next epoch runs.
            self.model.stop_training = True
            self._ended_epoch_early = True

    def on_epoch_end(self, epoch, logs=None):
        if self._ended_epoch_early:
            self.model.stop_training = False
            self._ended_epoch_early = False

    def on_train_end(self, logs=None):
        compat.set_initial_epoch(self.model, None)  # Keras would start every later `fit` at the restored epoch
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self._position is not None and step != self._last_saved_step:
            self._save(step, *self._position, self.params.get("steps"))
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if self.delete_on_end and self._chief and self._last_loss_finite:
            shutil.rmtree(self.backup_dir, ignore_errors=True)

    # -- writing --------------------------------------------------------------------------------------------

    def _save(self, step, epoch, done, steps_per_epoch):
        if not self._last_loss_finite:
            logger.warning("Not backing up step %d: the loss is not finite; the last good backup stays.", step)
            return
        if not all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in self.model.trainable_variables):
            logger.warning("Not backing up step %d: a weight is not finite; the last good backup stays.", step)
            return
        if steps_per_epoch and done >= steps_per_epoch:
            epoch, done = epoch + 1, 0
        name = f"{_PREFIX}{step:09d}"
        final = os.path.join(self._root, name)
        if os.path.exists(final):
            self._last_saved_step = step
            return
        tmp = os.path.join(self._root, _TMP_PREFIX + name)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        self.model.save_weights(os.path.join(tmp, _WEIGHTS_FILE))
        state = {"step": step, "epoch": epoch, "batch": done, "steps_per_epoch": steps_per_epoch}
        with open(os.path.join(tmp, _STATE_FILE), "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        with open(os.path.join(tmp, _WEIGHTS_FILE), "rb") as f:
            os.fsync(f.fileno())
        # The rename is the commit point: a reader sees either no step-K or a complete one.
        os.rename(tmp, final)
        _fsync_dir(self._root)
        for entry in os.listdir(self._root):
            if entry.startswith(_PREFIX) and entry != name:
                shutil.rmtree(os.path.join(self._root, entry), ignore_errors=True)
        self._last_saved_step = step

    @staticmethod
    def _agree_across_workers(strategy, step):
        """In a multi-worker cluster, check that every worker found the same backup (a shared backup_dir)."""
        same, mean = same_on_every_worker(strategy, step)
        if not same:
            raise ValueError(
                f"The workers found different backups (this one: global step {step}, the mean over the "
                f"workers: {mean:g}; -1 means none). "
                "`backup_dir` must be on a file system that every worker reads."
            )


def latest_backup_state(backup_dir):
    """The newest complete backup's state in `backup_dir`, or None; reads JSON only (no TensorFlow needed).

    `byol-pretrain` calls it before building anything, to know whether it resumes a run (and from where).

    Args:
        backup_dir: str or path-like, a `StepBackup`'s folder.

    Returns:
        dict with `step` (global step), `epoch` (0-based epoch to resume in), `batch` (batches already done in
        it), `steps_per_epoch` and `path` (the backup directory), or None when there is none.
    """
    backup_dir = os.fspath(backup_dir)
    if not os.path.isdir(backup_dir):
        return None
    steps = []
    for entry in os.listdir(backup_dir):
        if entry.startswith(_PREFIX):
            try:
                steps.append((int(entry[len(_PREFIX):]), entry))
            except ValueError:
                continue
    for _, entry in sorted(steps, reverse=True):
        path = os.path.join(backup_dir, entry)
        try:
            with open(os.path.join(path, _STATE_FILE)) as f:
                state = json.load(f)
        except (OSError, ValueError):
            continue  # Only complete directories are ever renamed to step-*; be lenient anyway.
        if os.path.exists(os.path.join(path, _WEIGHTS_FILE)):
            state["path"] = path
            return state
    return None


def batches_done(state, steps_per_epoch):
    """How many batches `fit` had drawn from its input when `state` was backed up; 0 for no state.

    With `steps_per_epoch` set, Keras draws every epoch from one iterator of the input, so the position is
    `epoch * steps_per_epoch + batch`: the global step when every step drew one batch, but not after a step a
    loss-scale optimizer skipped (the step counter stays, the batch was drawn). A backup written with another
    number of steps per epoch restarts its epoch (`StepBackup.on_train_begin`), and so does this position.

    Args:
        state: dict from `StepBackup.latest_state()`, or None.
        steps_per_epoch: int, this run's steps per epoch.

    Returns:
        int >= 0, the index of the next batch to draw (`pretrain_dataset(..., start_batch=)`).
    """
    if not state:
        return 0
    batch = int(state["batch"]) if state.get("steps_per_epoch") == steps_per_epoch else 0
    return int(state["epoch"]) * int(steps_per_epoch) + batch


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Stop `fit` at the first batch whose loss is NaN or infinite, with a message naming the global step.

    The global step is the value of `optimizer.iterations` when the batch began: the index of the update
    (the k of τ_k and of the learning rate). The weights after that step are not trusted: `StepBackup`
    refuses to save them, whatever the order of the callbacks, so the last good backup stays. After `fit`
    returns, `stopped_at_step` and `message` say what happened (None when training ended normally), so
    that an entry point can exit with an error.

    A `keras.callbacks.TerminateOnNaN` (which stops gracefully too, but names only the batch index within
    the epoch) that also watches another key and remembers the global step and the message.

    Args:
        monitor: str, the log to watch. Defaults to "loss".
    """

    def __init__(self, monitor="loss"):
        super().__init__(raise_error=False)
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"`monitor` must be a non-empty string. Received: monitor={monitor!r}")
        self.monitor = monitor
        self.stopped_at_step = None
        self.message = None
        self._step = 0
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self.stopped_at_step = None
        self.message = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_batch_end(self, batch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or _is_finite(value):
            return
        self.stopped_at_step = self._step
        self.message = (
            f"Non-finite {self.monitor} ({float(value)}) at global step {self._step} "
            f"(epoch {self._epoch + 1}, batch {batch + 1}): training stopped. The weights of this step are "
            "not backed up; the last good backup is kept."
        )
        logger.error(self.message)
        self.model.stop_training = True
