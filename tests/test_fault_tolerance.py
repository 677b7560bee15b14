"""byol_keras.fault_tolerance: step backups that a killed run resumes from exactly, in this process and
after a SIGKILL of a real training process, and the stop at a non-finite loss."""

import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from byol_keras.fault_tolerance import StepBackup, StopOnNonFiniteLoss
from byol_keras.schedules import target_tau, warmup_cosine

import distributed_worker  # tests/ is on sys.path under pytest
from helpers import (
    worker_args,
    small_byol,
    numpy_weights,
    parse_result,
    read_steps,
    WORKER,
    ROOT,
    TIMEOUT,
)

# The datasets here are generated, not shuffled: Keras' note that `shuffle=True` is ignored is noise.
pytestmark = pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning")


# ------------------------------------------------------------------------------------------------------
# StepBackup and StopOnNonFiniteLoss, in this process
# ------------------------------------------------------------------------------------------------------


class CrashAtStep(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            raise KeyboardInterrupt(f"simulated crash after step {self.step}")


class Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rows, self.epochs = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_train_batch_end(self, batch, logs=None):
        self.rows.append({k: float(logs[k]) for k in ("step_loss", "tau", "learning_rate")})


@pytest.mark.slow
def test_step_backup_restores_mid_epoch_exactly(tmp_path):
    args = worker_args(epochs=2, steps_per_epoch=3)
    total = args.epochs * args.steps_per_epoch
    backup_dir = str(tmp_path / "backup")

    reference = small_byol(args)
    ref = Record()
    reference.fit(distributed_worker.dataset(0, total, 8, 8, 3), epochs=2, steps_per_epoch=3, callbacks=[ref], verbose=0)

    crashed = small_byol(args)
    # The handlers before the fit: Python's (or, in a process started in the background by a shell without job
    # control, SIG_IGN for SIGINT, inherited).
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(distributed_worker.dataset(0, total, 8, 8, 3), epochs=2, steps_per_epoch=3,
                    callbacks=[StepBackup(backup_dir, 2), CrashAtStep(5)], verbose=0)
    # A `fit` ended by an exception leaves no handler of the backup installed: the process's own are back.
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    # Backups at global steps 2 and 4, both kept (keep=2). Step 4 = epoch 1 (0-based), 1 batch done.
    assert sorted(os.listdir(backup_dir)) == ["step-000000002", "step-000000004"]
    state = StepBackup(backup_dir, 2).latest_state()
    assert {k: state[k] for k in ("step", "epoch", "batch", "steps_per_epoch")} == {
        "step": 4, "epoch": 1, "batch": 1, "steps_per_epoch": 3}

    # A write that a kill interrupted (a .tmp directory with a torn file) is ignored, then removed.
    torn = os.path.join(backup_dir, ".tmp-step-000000006")
    os.makedirs(torn)
    with open(os.path.join(torn, "model.weights.h5"), "wb") as f:
        f.write(b"\x89HDF\r\n")
    assert StepBackup(backup_dir, 2).latest_state()["step"] == 4

    resumed = small_byol(args)  # a fresh process would build exactly this
    backup = StepBackup(backup_dir, 2)
    rec = Record()
    start = backup.latest_state()["step"]
    resumed.fit(distributed_worker.dataset(start, total, 8, 8, 3), epochs=2, steps_per_epoch=3,
                callbacks=[backup, rec], verbose=0)
    assert not os.path.exists(torn)
    assert backup.restored_state["step"] == 4
    assert rec.epochs == [1], "the resumed run continues in the epoch it was killed in"
    assert len(rec.rows) == 2, "…and only runs the batches that epoch still had to do"
    assert int(resumed.optimizer.iterations) == total
    # τ and the learning rate continue from the global step, bit for bit.
    for k, row in zip((4, 5), rec.rows):
        assert row["tau"] == pytest.approx(float(target_tau(k, total, 0.9)), abs=1e-7)
        assert row["learning_rate"] == pytest.approx(float(warmup_cosine(k, 0.05, 2, total)), abs=1e-8)
        assert row["step_loss"] == pytest.approx(ref.rows[k]["step_loss"], rel=1e-5)
    # The same weights as the uninterrupted run (same data, same order of operations on one CPU).
    for a, b in zip(numpy_weights(reference.weights), numpy_weights(resumed.weights)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Training ended: the final state is backed up, so running the command again trains no more.
    assert StepBackup(backup_dir, 2).latest_state()["step"] == total
    assert resumed._initial_epoch is None, "the restored epoch must not stick to later fit calls"


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_backup(tmp_path, caplog):
    args = worker_args(epochs=2, steps_per_epoch=4)
    backup_dir = str(tmp_path / "backup")
    model = small_byol(args)
    stopper = StopOnNonFiniteLoss()
    # NaN images at global step 5; its update gives iterations = 6, a multiple of save_every_steps.
    data = distributed_worker.dataset(0, 8, 8, 8, 3, nan_at_step=5)
    # The backup before the stopper here, after it below: the order must not matter.
    with caplog.at_level("ERROR", logger="byol_keras.fault_tolerance"):
        model.fit(data, epochs=2, steps_per_epoch=4, callbacks=[StepBackup(backup_dir, 2), stopper], verbose=0)
    assert stopper.stopped_at_step == 5
    assert "Non-finite loss (nan) at global step 5 (epoch 2, batch 2)" in stopper.message
    # Told once, as an error, by the module that stops the run.
    told = [(record.name, record.levelname) for record in caplog.records if record.getMessage() == stopper.message]
    assert told == [("byol_keras.fault_tolerance", "ERROR")]
    assert int(model.optimizer.iterations) == 6, "training stopped right after the bad step"
    assert isinstance(stopper, keras.callbacks.TerminateOnNaN)  # Keras' own, extended
    assert sorted(os.listdir(backup_dir)) == ["step-000000002", "step-000000004"]

    fresh = small_byol(args)
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(os.path.join(backup_dir, "step-000000004", "model.weights.h5"))
    assert int(fresh.optimizer.iterations) == 4
    assert all(np.isfinite(w).all() for w in numpy_weights(fresh.weights))

    # Order reversed: the stopper first.
    model = small_byol(args)
    backup_dir2 = str(tmp_path / "backup2")
    model.fit(data, epochs=2, steps_per_epoch=4, callbacks=[StopOnNonFiniteLoss(), StepBackup(backup_dir2, 2)], verbose=0)
    assert sorted(os.listdir(backup_dir2)) == ["step-000000002", "step-000000004"]


def test_step_backup_arguments_are_validated():
    with pytest.raises(ValueError, match="save_every_steps=0"):
        StepBackup("/tmp/x", 0)
    with pytest.raises(ValueError, match="save_every_steps=2.5"):
        StepBackup("/tmp/x", 2.5)
    with pytest.raises(ValueError, match="backup_dir=''"):
        StepBackup("", 10)
    assert StepBackup("/nonexistent/byol/backup", 10).latest_state() is None


def _logged_steps(run_dir):
    """How many whole lines the run's steps.jsonl holds so far (0 before it exists)."""
    try:
        with open(os.path.join(run_dir, "steps.jsonl")) as f:
            return f.read().count("\n")
    except FileNotFoundError:
        return 0


def _train_in_this_process(capsys, run_dir, common):
    """The worker's `train` command, its `main` called in this process (the same code as `python WORKER train
    ...`, without a TensorFlow start-up): its RESULT record."""
    capsys.readouterr()
    try:
        distributed_worker.main(["train", "--run-dir", run_dir, *common])
    finally:
        keras.config.enable_traceback_filtering()  # `main` turns it off for the process it runs in
    return parse_result(capsys.readouterr().out)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_the_same_command_resumes(tmp_path, capsys):
    common = ["--encoder", "small", "--epochs", "2", "--steps-per-epoch", "5", "--backup-every", "3"]
    reference_dir, run_dir = str(tmp_path / "reference"), str(tmp_path / "run")
    # The uninterrupted reference and the resume after the kill run the worker's `main` in this process; the
    # killed run is a real process, killed by a real SIGKILL (what a resume then reads is the files it left).
    reference = _train_in_this_process(capsys, reference_dir, common)
    assert reference is not None and reference["step"] == 10, reference
    # Output goes to a file: a pipe nobody reads while we poll could fill up and stall the process.
    killed_log = open(tmp_path / "killed.log", "w+")
    # The same command, killed with SIGKILL once global step 6 (epoch 2, batch 1) is backed up *and* logged
    # (the backup is written first: a kill between the two would leave 5 logged steps). From step 6 on the
    # process waits 5 s after each step, after its backup and log line, so the kill lands before step 7.
    command = [sys.executable, WORKER, "train", "--run-dir", run_dir, *common]
    proc = subprocess.Popen(command + ["--sleep", "5", "--sleep-from", "6"], cwd=ROOT, stdout=killed_log,
                            stderr=subprocess.STDOUT, text=True)
    backup = os.path.join(run_dir, "backup", "step-000000006")
    deadline = time.monotonic() + TIMEOUT
    try:
        while not (os.path.isdir(backup) and _logged_steps(run_dir) >= 6):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no backup appeared in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        killed_log.close()
    assert proc.returncode == -signal.SIGKILL
    killed_steps = read_steps(run_dir)
    assert 6 <= len(killed_steps) < 10, "killed mid-epoch, after the step-6 backup"

    resumed = _train_in_this_process(capsys, run_dir, common)  # the same command again
    assert resumed is not None and resumed["restored_step"] == 6 and resumed["step"] == 10, resumed
    after = read_steps(run_dir)[len(killed_steps):]
    assert [r["step"] for r in after] == [6, 7, 8, 9]
    expected = {r["step"]: r for r in read_steps(reference_dir)}
    for row in after:
        ref = expected[row["step"]]
        # Global step, τ and learning rate continue exactly; the loss trajectory is the reference's.
        assert row["tau"] == ref["tau"] and row["learning_rate"] == ref["learning_rate"]
        assert row["step_loss"] == pytest.approx(ref["step_loss"], rel=1e-5)
    # Fixed seed, data a function of the global step, one CPU: the final weights equal the
    # uninterrupted run's (bit for bit here; the tolerance allows for other CPUs' summation orders).
    np.testing.assert_allclose(resumed["sums"], reference["sums"], rtol=1e-5, atol=1e-5)
