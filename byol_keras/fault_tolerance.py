"""Fault tolerance for `fit`: step backups that a stopped run resumes from exactly, a clean stop at SIGTERM
and SIGINT, and a stop at a non-finite loss that keeps the last good state.

- `StepBackup` writes every N global steps to a temporary folder and renames it into place (a stop never
  leaves an unreadable backup), keeps the newest K complete ones, and on `fit` start restores the newest one
  that reads back, with its global step and its place in the epoch. At SIGTERM or SIGINT it lets the step in
  flight finish, writes a backup and raises `StoppedBySignal`.
- `latest_backup_state` finds that backup without TensorFlow: a damaged one (its state, its weights, a missing
  file) is named in a warning and the next older one is used; when none reads, `BackupError` names them all.
- `LatestModel` keeps `latest.keras` (the full model) the same way: atomically, never after a non-finite loss.
- `StopOnNonFiniteLoss` ends training at the first NaN/inf loss, naming the global step.

Which worker keeps the files is `byol_keras.cluster`'s rule, as for every file of a run.
"""

import errno
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import threading

import keras
import numpy as np

from byol_keras import compat
from byol_keras.cluster import any_worker, is_chief, same_on_every_worker, scratch_dir
from byol_keras.durable import WriteError, atomic_save_model, fsync_dir, fsync_file, writing
from byol_keras.validation import check_positive_int

logger = logging.getLogger(__name__)


_STATE_FILE = "state.json"
_WEIGHTS_FILE = "model.weights.h5"
_RECORD_FILE = "config.json"  # the run's resolved configuration, when the caller gives one (`record=`)
_PREFIX = "step-"
_TMP_PREFIX = ".tmp-"
_DAMAGED_PREFIX = "damaged-"
# The signals a cluster or a user stops a job with: Kubernetes, Slurm and preemptible cloud machines send SIGTERM
# (with a grace period), a terminal's Ctrl-C SIGINT.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class BackupError(ValueError):
    """A backup folder holds backups, and none of them reads; the message names each with its reason."""


class StoppedBySignal(Exception):
    """`fit` stopped at SIGTERM or SIGINT after the step in flight, with a backup of that step written.

    Attributes:
        signum: int, the signal (`signal.SIGTERM`...); in a multi-worker cluster, the signal of the worker
            that received one when this worker did not (then SIGTERM).
        step: int, the global step backed up.
        backup_path: str or None, the backup written (None when the weights were not finite).
        exit_code: int, the shell's status for a process ended by that signal (128 + signal number).
    """

    def __init__(self, signum, step, backup_path):
        self.signum, self.step, self.backup_path = signum, step, backup_path
        self.exit_code = 128 + int(signum)
        where = f"backup written to {backup_path}" if backup_path else "no backup written (the weights are not finite)"
        super().__init__(f"stopped by {signal.Signals(signum).name} at global step {step}; {where}")


def _is_finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # Not a scalar: nothing to judge.


def _saved_variables(model):
    """What a save writes: the weights (BatchNorm's moving statistics and the target network too) and the
    optimizer's variables (the step counter, momenta)."""
    return list(model.weights) + (list(model.optimizer.variables) if model.optimizer is not None else [])


def _weights_finite(model):
    """Whether every floating variable a save would write is finite. A loss can still be finite when a statistic is
    not."""
    return all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in _saved_variables(model)
               if v.dtype.startswith(("float", "bfloat")))


def _file_digest(path):
    """`(size in bytes, sha256 hex)` of a file, read from the disk."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


class StepBackup(keras.callbacks.Callback):
    """Back up the whole training state every N global steps, atomically, and resume from it mid-epoch.

    Why not Keras' `BackupAndRestore`: see `docs/design.md` ("Why StepBackup").

    This callback:

    - saves every `save_every_steps` *global* steps (`optimizer.iterations`, which also drives τ and the
      learning rate), and when training ends, the model's weights and the optimizer's variables (the step
      counter, momenta, a loss scale) with `model.save_weights`, plus `state.json` with the global step,
      the epoch, the number of batches done in it and the weights file's size and SHA-256;
    - writes to `backup_dir/.tmp-step-K`, flushes it to the disk, reads the weights back for their checksum,
      then renames the folder to `backup_dir/step-K` (the commit point) and only then deletes the backups
      beyond the newest `keep`; leftover `.tmp-*` folders of an interrupted write are removed;
    - at SIGTERM or SIGINT (`stop_signals`) lets the step in flight finish, writes a backup of it and raises
      `StoppedBySignal` out of `fit` (a second signal exits the process at once, status 128 + signal; the
      newest complete backup stays). In a multi-worker cluster the workers agree after every step whether
      any of them was signalled, so that all stop at the same step;
    - never saves after a non-finite loss or when a trainable weight is not finite: the last good backup
      stays;
    - on `fit` start, restores the newest backup that reads (`latest_backup_state`: a damaged one is named in a
      warning and moved aside as `damaged-step-K`), sets the initial epoch and ends the resumed epoch after the
      batches it still had to do, so the run does exactly `epochs × steps_per_epoch` steps and later epochs
      start at the same global steps as in an uninterrupted run;
    - in multi-worker training, every worker saves (saving reads synchronised variables, which takes part
      in collectives) but only the chief writes to `backup_dir`; the others write to a temporary directory
      that is removed. Every worker restores from `backup_dir`, so it must be on a file system that all
      workers read (a shared disk or a bucket); the workers check that they restored the same step.

    The data position: the callback cannot move `fit`'s input. For an exact resume, the input must start
    at the batch the interrupted run would have drawn next, `batches_done(backup.latest_state(),
    steps_per_epoch)`: `byol_keras.data.pretrain_dataset(..., repeat=True, start_batch=that)` does, cheaply
    (each batch is a function of the seed and its position; skipped file names are never read), and
    `byol-pretrain` passes it. Without it, the resumed run restarts the data stream.

    Needs a known number of steps per epoch (`steps_per_epoch=` or a dataset of known length) to resume
    mid-epoch; without one, a mid-epoch backup restarts its epoch. The resumed epoch is ended through
    `model.stop_training`, which this callback then resets at that epoch's end.

    Args:
        backup_dir: str, where the chief keeps its backups; used by this run only.
        save_every_steps: positive int, N.
        delete_on_end: bool, remove the backups when `fit` ends normally. Off by default, so that running a
            finished command again does not train again. Defaults to False.
        keep: positive int, how many complete backups to keep (the newest). With 2, a backup damaged after
            it was written (a disk error) still leaves one to resume from. Defaults to 2.
        stop_signals: tuple of signals to stop at with a backup (handled in the main thread only; `()` leaves
            the process's handlers alone). Defaults to `STOP_SIGNALS` (SIGTERM, SIGINT).
        record: dict or None, JSON data stored as `config.json` in every backup (`byol-pretrain` keeps the
            run's resolved configuration there, a copy of the run folder's record). Defaults to None.

    Example:

    >>> backup = StepBackup("/tmp/run/backup", save_every_steps=500)  # doctest: +SKIP
    >>> model.fit(dataset, epochs=100, steps_per_epoch=390, callbacks=[backup])  # doctest: +SKIP
    """

    def __init__(self, backup_dir, save_every_steps, delete_on_end=False, keep=2, stop_signals=STOP_SIGNALS,
                 record=None):
        super().__init__()
        if not isinstance(backup_dir, (str, os.PathLike)) or not str(backup_dir):
            raise ValueError(f"`backup_dir` must be a non-empty path. Received: backup_dir={backup_dir!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.save_every_steps = check_positive_int("save_every_steps", save_every_steps)
        self.delete_on_end = bool(delete_on_end)
        self.keep = check_positive_int("keep", keep)
        self.stop_signals = tuple(signal.Signals(s) for s in stop_signals)
        self.record = None if record is None else json.loads(json.dumps(dict(record)))
        self.restored_state = None
        self.last_saved = None  # (global step, path) of the newest complete backup
        self._scratch = None
        self._epoch = 0
        self._resume_epoch = None
        self._resume_batches = 0
        self._ended_epoch_early = False
        self._last_loss_finite = True
        self._last_saved_step = None
        self._signal = None
        self._previous_handlers = {}

    # -- reading ------------------------------------------------------------------------------------------

    def latest_state(self):
        """The newest backup's state that reads, or None (`latest_backup_state` of `backup_dir`)."""
        return latest_backup_state(self.backup_dir)

    # -- fit hooks ------------------------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        strategy = self.model.distribute_strategy
        self._chief = is_chief(strategy)
        self._last_loss_finite = True
        self._ended_epoch_early = False
        self._resume_epoch, self._resume_batches = None, 0
        self._last_saved_step = None
        self._position = None
        self.last_saved = None
        state = self.latest_state()
        if self._chief:
            os.makedirs(self.backup_dir, exist_ok=True)
            self._set_aside(state)
            self._root = self.backup_dir
        else:
            self._scratch = scratch_dir(strategy, prefix="byol-backup")
            self._root = self._scratch
        self._agree_across_workers(strategy, state["step"] if state else -1)
        self.restored_state = state
        optimizer = self.model.optimizer
        if state is None:
            self._prev_step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        else:
            self._restore(state, optimizer)
        self._install_signal_handlers()

    def _restore(self, state, optimizer):
        if optimizer is not None and not optimizer.built:
            # The optimizer's variables (step counter, momenta) must exist to be loaded.
            optimizer.build(self.model.trainable_variables)
        weights = os.path.join(state["path"], _WEIGHTS_FILE)
        try:
            self.model.load_weights(weights)
        except Exception as error:  # h5py and Keras raise many kinds; the file is what matters
            raise BackupError(f"The backup weights {weights} do not load: {error}") from error
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
        self.last_saved = (step, state["path"])
        logger.info(
            "Resumed from %s: global step %d, epoch %d, %d batch(es) of it already done.",
            state["path"], step, epoch + 1, batch,
        )

    def _set_aside(self, state):
        """Remove interrupted writes; rename backups newer than the one restored (damaged) to `damaged-step-K`,
        so that the resumed run's own backup of that step can take the name."""
        restored = state["step"] if state else -1
        for entry in os.listdir(self.backup_dir):
            path = os.path.join(self.backup_dir, entry)
            if entry.startswith(_TMP_PREFIX):  # A write that a stop interrupted.
                shutil.rmtree(path, ignore_errors=True)
            elif step_of_backup(entry) is not None and step_of_backup(entry) > restored:
                aside = os.path.join(self.backup_dir, _DAMAGED_PREFIX + entry)
                shutil.rmtree(aside, ignore_errors=True)
                os.rename(path, aside)
                logger.warning("Moved the damaged backup %s aside to %s.", path, aside)

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
        if self._stop_requested():
            self._stop(step)
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
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        try:
            if self._position is not None and step != self._last_saved_step:
                self._save(step, *self._position, self.params.get("steps"))
        finally:
            self.release()
        if self._signal is not None:  # Signalled after the last step (during the last epoch's monitors).
            raise StoppedBySignal(self._signal, step, self.last_saved[1] if self.last_saved else None)
        if self.delete_on_end and self._chief and self._last_loss_finite:
            shutil.rmtree(self.backup_dir, ignore_errors=True)

    def release(self):
        """Undo what `on_train_begin` set up in the process (the signal handlers, the restored initial epoch, a
        worker's scratch folder). Called at `fit`'s end and at `StoppedBySignal`; Keras calls no callback when
        `fit` ends by another exception, so `BYOL.fit` calls it however `fit` ends (with another model, call it
        after a failed `fit`). Calling it twice is harmless."""
        compat.set_initial_epoch(self.model, None)  # Keras would start every later `fit` at the restored epoch
        self._restore_signal_handlers()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    # -- signals --------------------------------------------------------------------------------------------

    def _install_signal_handlers(self):
        self._signal = None
        self._previous_handlers = {}
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only; a `fit` elsewhere keeps the defaults.
        for signum in self.stop_signals:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self):
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def _on_signal(self, signum, frame):
        name = signal.Signals(signum).name
        if self._signal is None:
            self._signal = signum
            os.write(2, f"{name} received: stopping after the step in flight, with a backup "
                        f"(send it again to exit at once)\n".encode())
            return
        # A second signal: exit now. A backup being written is a .tmp- folder, removed by the next run; the
        # newest complete one stays.
        kept = f"the backup of global step {self.last_saved[0]} in {self.last_saved[1]}" if self.last_saved else "no backup"
        os.write(2, f"second {name}: exiting at once; {kept} stays\n".encode())
        os._exit(128 + int(signum))

    def _stop_requested(self):
        signalled = self._signal is not None
        # Every worker must stop after the same step (saving is a collective): they agree, each step, on
        # whether any of them was signalled. Outside a cluster this is the local flag, with no collective.
        agreed = any_worker(self.model.distribute_strategy, signalled)
        if agreed and not signalled:
            self._signal = signal.SIGTERM  # another worker was signalled
        return agreed

    def _stop(self, step):
        try:
            if step != self._last_saved_step and self._position is not None:
                self._save(step, *self._position, self.params.get("steps"))
        finally:
            self.release()
        saved = self.last_saved if self.last_saved and self.last_saved[0] == step else None
        raise StoppedBySignal(self._signal, step, saved[1] if saved else None)

    # -- writing --------------------------------------------------------------------------------------------

    def _save(self, step, epoch, done, steps_per_epoch):
        if not self._last_loss_finite:
            logger.warning("Not backing up step %d: the loss is not finite; the last good backup stays.", step)
            return
        if not _weights_finite(self.model):
            logger.warning("Not backing up step %d: a variable is not finite; the last good backup stays.", step)
            return
        if steps_per_epoch and done >= steps_per_epoch:
            epoch, done = epoch + 1, 0
        name = f"{_PREFIX}{step:09d}"
        final = os.path.join(self._root, name)
        if os.path.exists(final):
            self._last_saved_step = step
            self.last_saved = (step, final)
            return
        tmp = os.path.join(self._root, _TMP_PREFIX + name)
        weights = os.path.join(tmp, _WEIGHTS_FILE)
        try:
            with writing(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
                self._check_space()
                os.makedirs(tmp)
                self.model.save_weights(weights)
                fsync_file(weights)
                # Read back from the disk: the checksum that every later read is compared with.
                size, digest = _file_digest(weights)
                state = {"step": step, "epoch": epoch, "batch": done, "steps_per_epoch": steps_per_epoch,
                         "weights_bytes": size, "weights_sha256": digest}
                files = {_STATE_FILE: state, **({_RECORD_FILE: self.record} if self.record is not None else {})}
                for filename, value in files.items():
                    with open(os.path.join(tmp, filename), "w") as f:
                        json.dump(value, f, indent=1)
                        f.flush()
                        os.fsync(f.fileno())
                # The rename is the commit point: a reader sees either no step-K or a complete one.
                os.rename(tmp, final)
                fsync_dir(self._root)
        except WriteError as error:  # `writing` turned the I/O error into one; name the backup that stays
            shutil.rmtree(tmp, ignore_errors=True)
            kept = (f"the backup of global step {self.last_saved[0]} in {self.last_saved[1]} is intact"
                    if self.last_saved else "no earlier backup")
            raise WriteError(final, f"{error.reason}; {kept}", error.errno) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._last_saved_step = step
        self.last_saved = (step, final)
        self._prune()

    def _check_space(self):
        """Refuse, with the numbers, to start a backup that the disk cannot hold: HDF5 meeting a full disk half-way
        can crash the process in its clean-up (seen with h5py 3 on a full tmpfs) instead of raising."""
        if self.last_saved and os.path.isfile(os.path.join(self.last_saved[1], _WEIGHTS_FILE)):
            needed = os.path.getsize(os.path.join(self.last_saved[1], _WEIGHTS_FILE))
        else:  # The variables' bytes, and HDF5's few kilobytes of metadata for each.
            needed = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize + 4096 for v in _saved_variables(self.model))
        free = shutil.disk_usage(self._root).free
        if free < needed + (1 << 20):
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: the backup needs about "
                                        f"{needed / 1e6:.1f} MB, {free / 1e6:.1f} MB are free")

    def _prune(self):
        """Delete the backups beyond the newest `keep`, now that a newer one is complete."""
        steps = sorted((s for s in map(step_of_backup, os.listdir(self._root)) if s is not None), reverse=True)
        for step in steps[self.keep:]:
            shutil.rmtree(os.path.join(self._root, f"{_PREFIX}{step:09d}"), ignore_errors=True)

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


def step_of_backup(entry):
    """The global step of a backup folder's name `step-K`, or None for any other name (`damaged-step-K` too)."""
    if entry.startswith(_PREFIX) and entry[len(_PREFIX):].isdigit():
        return int(entry[len(_PREFIX):])
    return None


# (path, reason) pairs already told, so that a damaged backup is named once per process, not at every read.
_told = set()
# path -> ((file identities), state or reason): a backup's checksum is read once per process.
_checked = {}


def _identity(path):
    try:
        return tuple((s.st_size, s.st_mtime_ns, s.st_ino) for s in
                     (os.stat(os.path.join(path, f)) for f in (_STATE_FILE, _WEIGHTS_FILE)))
    except OSError:
        return None


def read_backup(path):
    """The state of the backup folder `path` if every file of it reads, else the reason it does not.

    Checks that `state.json` parses and names this folder's step, that the weights file exists and, when
    the state records them (every backup written by this version), that its size and SHA-256 are the
    ones written; a backup without them must at least open as an HDF5 file.

    Args:
        path: str, a `step-K` folder.

    Returns:
        `(state, None)` with `state["path"] = path`, or `(None, reason)`.
    """
    identity = _identity(path)
    if identity is not None and _checked.get(path, (None,))[0] == identity:
        return _checked[path][1]
    result = _read_backup(path)
    if identity is not None:
        _checked[path] = (identity, result)
    return result


def _read_backup(path):
    state_path, weights = os.path.join(path, _STATE_FILE), os.path.join(path, _WEIGHTS_FILE)
    try:
        with open(state_path) as f:
            state = json.load(f)
    except FileNotFoundError:
        return None, f"{state_path} is missing"
    except OSError as error:
        return None, f"{state_path} does not read ({error.strerror or error})"
    except ValueError as error:
        return None, f"{state_path} is not valid JSON ({error})"
    if not isinstance(state, dict) or not all(isinstance(state.get(k), int) for k in ("step", "epoch", "batch")):
        return None, f"{state_path} lacks the integer fields step, epoch and batch"
    if state["step"] != step_of_backup(os.path.basename(path)):
        return None, f"{state_path} says global step {state['step']}, not the folder's"
    if not os.path.isfile(weights):
        return None, f"{weights} is missing"
    if "weights_sha256" in state:
        size, digest = _file_digest(weights)
        if size != state.get("weights_bytes"):
            return None, f"{weights} has {size} bytes, the backup wrote {state.get('weights_bytes')} (truncated?)"
        if digest != state["weights_sha256"]:
            return None, f"{weights} does not match its SHA-256 (damaged)"
    else:
        import h5py

        try:
            with h5py.File(weights, "r"):
                pass
        except Exception as error:  # h5py's errors are OSError or its own
            return None, f"{weights} does not open ({str(error).splitlines()[0]})"
    return dict(state, path=path), None


def latest_backup_state(backup_dir):
    """The newest backup in `backup_dir` that reads, or None when there is none; no TensorFlow needed.

    `byol-pretrain` calls it before building anything, to know whether it resumes a run (and from where).
    A backup that does not read (`read_backup`) is named in a warning, once, and the next older one is used.

    Args:
        backup_dir: str or path-like, a `StepBackup`'s folder.

    Returns:
        dict with `step` (global step), `epoch` (0-based epoch to resume in), `batch` (batches already done in
        it), `steps_per_epoch` and `path` (the backup directory), or None when there is no backup.

    Raises:
        BackupError: there are backups and none reads; the message names each and its reason.
    """
    backup_dir = os.fspath(backup_dir)
    if not os.path.isdir(backup_dir):
        return None
    steps = sorted((s for s in map(step_of_backup, os.listdir(backup_dir)) if s is not None), reverse=True)
    reasons = []
    for step in steps:
        state, reason = read_backup(os.path.join(backup_dir, f"{_PREFIX}{step:09d}"))
        if state is not None:
            for told in reasons:
                if told not in _told:
                    _told.add(told)
                    logger.warning("Skipping a damaged backup: %s; resuming from the older %s.", told, state["path"])
            return state
        reasons.append(reason)
    if reasons:
        raise BackupError(
            f"No backup in {backup_dir} reads: " + "; ".join(reasons) + ". Nothing was deleted: move the "
            "folder away (or restart the run deliberately) to train from step 0."
        )
    return None


def backup_record(state):
    """The run configuration stored in the backup of `state` (`StepBackup(record=...)`), or None."""
    try:
        with open(os.path.join(state["path"], _RECORD_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
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
    (the k of τ_k and of the learning rate). The weights after that step are not trusted: `StepBackup` and
    `LatestModel` refuse to save them, whatever the order of the callbacks, so the last good files stay. After `fit`
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
            "not saved (StepBackup and LatestModel refuse them)."
        )
        logger.error(self.message)
        self.model.stop_training = True


class LatestModel(keras.callbacks.Callback):
    """Keep the full model (`model.save`) at `path`, written atomically, after every epoch or every N steps.

    Keras' `ModelCheckpoint` writes the `.keras` zip in place (a stop half-way leaves it unreadable) and
    saves after a non-finite loss too; this one writes beside the file and renames it over (`durable`), and
    never saves a model whose loss or weights are not finite: the last good file stays.

    Args:
        path: str, the `.keras` file.
        save_every_steps: positive int or None: save every N global steps instead of at each epoch's end.
            Defaults to None.

    Attributes:
        saved_step: int or None, the global step of the model in `path` (written by this `fit`).
    """

    def __init__(self, path, save_every_steps=None):
        super().__init__()
        self.path = os.fspath(path)
        self.save_every_steps = None if save_every_steps is None else check_positive_int(
            "save_every_steps", save_every_steps)
        self.saved_step = None
        self._finite = True

    def on_train_begin(self, logs=None):
        self._finite = True
        self._prev_step = self._step()

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        if "loss" in (logs or {}):
            self._finite = self._finite and _is_finite(logs["loss"])
        if self.save_every_steps:
            step = self._step()
            if step // self.save_every_steps > self._prev_step // self.save_every_steps:
                self._save(step)
            self._prev_step = step

    def on_epoch_end(self, epoch, logs=None):
        if not self.save_every_steps:
            self._save(self._step())

    def _save(self, step):
        if not self._finite or not _weights_finite(self.model):
            logger.warning("Not saving %s at step %d: the loss or a weight is not finite; the file stays as it was.",
                           self.path, step)
            return
        atomic_save_model(self.model, self.path)
        self.saved_step = step
