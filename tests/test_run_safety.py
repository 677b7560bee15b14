"""What a run keeps when things go wrong (docs/design.md, "What survives what"): SIGTERM and SIGINT, damaged backups
and records, a second run on the same folder, a non-finite loss, outputs that cannot be written, a full disk, a folder
without a test split.

The signals are real ones sent to real `python -m training.pretrain` processes; the launches that only read what a
stopped run left call the command's `main`/`run` in this process (the same code, without a TensorFlow start-up).
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from byol_keras import fault_tolerance
from byol_keras.cli.pretrain import parse_args, resolve_config
from byol_keras.durable import RunFolderInUse, WriteError, run_lock
from byol_keras.fault_tolerance import BackupError, StepBackup, latest_backup_state

from helpers import ROOT, TIMEOUT, assert_clean_error, main_in_process, pattern, save_image

# The demo shrunk: a 4-wide ConvNet, 5 steps an epoch, a backup every 4 steps (the signals land between them).
FLAGS = ["--preset", "demo", "--steps-per-epoch", "5", "--width", "4", "--backup-every", "4", "--knn-every", "100",
         "--export", "none", "--verbose", "2"]


def _start(out, log_path, epochs):
    log = open(log_path, "w")
    command = [sys.executable, "-m", "training.pretrain", *FLAGS, "--epochs", str(epochs), "--out", str(out)]
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True), log


def _wait_for(proc, log_path, text):
    deadline = time.monotonic() + TIMEOUT
    while text not in open(log_path).read():
        assert proc.poll() is None, open(log_path).read()[-4000:]
        assert time.monotonic() < deadline, f"{text!r} did not appear in time"
        time.sleep(0.05)


def _signal_and_wait(proc, log, signum):
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    return time.monotonic() - sent


def _stop_line(log_path, name):
    lines = [line for line in open(log_path).read().splitlines() if line.startswith(f"stopped by {name}")]
    assert len(lines) == 1, open(log_path).read()[-4000:]
    return lines[0]


def _final_weights(run_dir):
    from byol_keras import BYOL  # noqa: F401  (registers BYOL for loading)

    return keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False).get_weights()


@pytest.mark.slow
def test_sigterm_and_sigint_stop_with_a_backup_and_the_same_command_ends_on_the_uninterrupted_weights(
        tmp_path, capsys):
    from byol_keras.cli.pretrain import main

    run_dir, epochs = tmp_path / "run", 8
    # 1. SIGTERM mid-run (a cluster stopping the job). While it runs, a second command on its folder is refused.
    proc, log = _start(run_dir, tmp_path / "first.log", epochs)
    _wait_for(proc, tmp_path / "first.log", "Epoch 3/")
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main([*FLAGS, "--epochs", str(epochs), "--out", str(run_dir)], prog="python -m training.pretrain")
    err = capsys.readouterr().err
    assert refused.value.code == 2 and f"is in use by PID {proc.pid} on " in err, err
    seconds = _signal_and_wait(proc, log, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, open(tmp_path / "first.log").read()[-3000:]
    line = _stop_line(tmp_path / "first.log", "SIGTERM")
    first = int(line.split("at global step ")[1].split(";")[0])
    assert 10 <= first < 40, line
    assert line.endswith(f"backup written to {run_dir / 'backup' / f'step-{first:09d}'}; run the same command to resume")
    assert seconds < 60, "a stop within the grace period a cluster gives (seconds, measured in docs/results.md)"

    # 2. The same command resumes; SIGINT (Ctrl-C) stops it again.
    proc, log = _start(run_dir, tmp_path / "second.log", epochs)
    _wait_for(proc, tmp_path / "second.log", "Epoch 6/")
    _signal_and_wait(proc, log, signal.SIGINT)
    assert proc.returncode == 128 + signal.SIGINT, open(tmp_path / "second.log").read()[-3000:]
    assert "Traceback" not in open(tmp_path / "second.log").read()
    second = int(_stop_line(tmp_path / "second.log", "SIGINT").split("at global step ")[1].split(";")[0])
    assert first < second < 40
    assert f"Resuming from {run_dir / 'backup' / f'step-{first:09d}'} at global step {first}" in open(
        tmp_path / "second.log").read()

    # 3. The same command again, to the end; then the uninterrupted run. The same weights: nothing was lost or
    # done twice (the data, τ and the learning rate continued from each stop's step, mid-epoch, and the stream
    # crossed the data's epochs, 11 batches of the digits each, as the uninterrupted run's did).
    argv = [*FLAGS, "--epochs", str(epochs), "--verbose", "0"]
    summary = main([*argv, "--out", str(run_dir)], prog="python -m training.pretrain")
    assert summary["resumed_from_step"] == second and summary["steps"] == 40
    assert main([*argv, "--out", str(tmp_path / "reference")], prog="python -m training.pretrain")["steps"] == 40
    for a, b in zip(_final_weights(run_dir), _final_weights(tmp_path / "reference")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_second_signal_exits_at_once(monkeypatch, capfd):
    backup = StepBackup("/tmp/unused", 10)
    exits = []
    monkeypatch.setattr(fault_tolerance.os, "_exit", exits.append)
    backup.last_saved = (8, "/runs/r/backup/step-000000008")
    backup._on_signal(signal.SIGTERM, None)
    assert backup._signal == signal.SIGTERM and exits == []
    backup._on_signal(signal.SIGINT, None)
    assert exits == [128 + signal.SIGINT]
    err = capfd.readouterr().err
    assert "stopping after the step in flight" in err
    assert "second SIGINT: exiting at once; the backup of global step 8 in /runs/r/backup/step-000000008 stays" in err


def _tiny(out, *flags, **changes):
    """The demo as 2 steps an epoch of a 4-wide ConvNet, a backup every step (2 kept), training alone (no kNN monitor
    or views' XLA): a few seconds a launch."""
    config = resolve_config(parse_args([
        "--preset", "demo", "--steps-per-epoch", "2", "--width", "4", "--backup-every", "1", "--out", str(out),
        "--export", "none", "--verbose", "0", *flags]))
    return dict(config, test_split=None, augment=dict(config["augment"], jit_compile=False), **changes)


@pytest.fixture
def step_without_xla(monkeypatch):
    """The training step without XLA also under TF_ENABLE_ONEDNN_OPTS=0 (XLA would only add a compile a launch)."""
    from byol_keras import distribute

    monkeypatch.setattr(distribute, "_onednn_enabled", lambda: True)


def _damage(path, how):
    if how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    else:
        with open(path, "w") as f:
            f.write('{"step": 4, "epo')  # half-written


@pytest.mark.slow
def test_damaged_backups_and_records_are_named_and_the_older_backup_resumes(tmp_path, caplog, capsys,
                                                                            step_without_xla):
    from byol_keras.experiment import RunRecordError, run

    run_dir = tmp_path / "run"
    backups = run_dir / "backup"
    keep = ("--keep-backups", "3")  # three backups: the two newest damaged in different ways, the third resumes
    assert parse_args(["--preset", "demo"]).keep_backups == 2, "the command keeps two by default"
    assert run(_tiny(run_dir, "--epochs", "2", *keep))["steps"] == 4
    # The newest three complete backups are kept (the first pruned), each with the run's record.
    assert sorted(os.listdir(backups)) == ["step-000000002", "step-000000003", "step-000000004"]
    assert json.loads((backups / "step-000000004" / "config.json").read_text()) == json.loads(
        (run_dir / "config.json").read_text())

    # The newest backup's state half-written and the next one's weights truncated: each named in a warning, the
    # third resumes; the damaged ones are set aside.
    _damage(backups / "step-000000004" / "state.json", "json")
    _damage(backups / "step-000000003" / "model.weights.h5", "truncate")
    with caplog.at_level("WARNING", logger="byol_keras.fault_tolerance"):
        summary = run(_tiny(run_dir, "--epochs", "3", *keep))
    assert summary["resumed_from_step"] == 2 and summary["steps"] == 6
    assert f"{backups / 'step-000000004' / 'state.json'} is not valid JSON" in caplog.text
    assert f"{backups / 'step-000000003' / 'model.weights.h5'} has " in caplog.text and "(truncated?)" in caplog.text
    assert {"damaged-step-000000003", "damaged-step-000000004"} <= set(os.listdir(backups))

    # Every backup damaged: refused, naming each, and nothing deleted or started over.
    _damage(backups / "step-000000006" / "model.weights.h5", "truncate")
    os.remove(backups / "step-000000005" / "state.json")
    _damage(backups / "step-000000004" / "state.json", "json")
    before = sorted(os.listdir(backups))
    with pytest.raises(BackupError) as error:
        run(_tiny(run_dir, "--epochs", "4", *keep))
    assert str(backups / "step-000000006" / "model.weights.h5") in str(error.value)
    assert f"{backups / 'step-000000005' / 'state.json'} is missing" in str(error.value)
    assert f"{backups / 'step-000000004' / 'state.json'} is not valid JSON" in str(error.value)
    assert sorted(os.listdir(backups)) == before

    # Starting over is deliberate, and says what it discards.
    capsys.readouterr()
    assert run(_tiny(run_dir, "--epochs", "1"), restart=True)["resumed_from_step"] is None
    said = capsys.readouterr().out
    assert f"--restart: discarding the earlier run in {run_dir}: the backups of global steps 4, 5, 6; config.json" in said

    # The run's record damaged: a resume stops, naming it and the backup's copy; the flags do not replace it.
    record = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text('{"preset": "demo", "base_learn')
    with pytest.raises(RunRecordError) as error:
        run(_tiny(run_dir, "--epochs", "2", "--learning-rate", "0.5"))
    copy = backups / "step-000000002" / "config.json"
    assert f"The run's record {run_dir / 'config.json'} does not read" in str(error.value)
    assert f"cp {copy} {run_dir / 'config.json'}" in str(error.value)
    assert (run_dir / "config.json").read_text() == '{"preset": "demo", "base_learn'
    assert json.loads(copy.read_text()) == record, "the copy the message gives is the run's record"


def test_latest_backup_state_names_what_does_not_read(tmp_path):
    assert latest_backup_state(tmp_path / "none") is None
    (tmp_path / "empty").mkdir()
    assert latest_backup_state(tmp_path / "empty") is None
    (tmp_path / "b" / "step-000000005").mkdir(parents=True)
    (tmp_path / "b" / "step-000000005" / "state.json").write_text(json.dumps({"step": 4, "epoch": 0, "batch": 4}))
    with pytest.raises(BackupError, match=r"step-000000005/state.json says global step 4, not the folder's"):
        latest_backup_state(tmp_path / "b")


@pytest.mark.slow
def test_a_non_finite_loss_keeps_the_last_good_files_and_names_them(tmp_path, step_without_xla):
    from byol_keras.experiment import NonFiniteLossError, run

    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as error:
        run(_tiny(run_dir, "--epochs", "8", "--steps-per-epoch", "1", "--backup-every", "1", "--learning-rate", "1e6"))
    message = str(error.value)
    steps = sorted(int(name.split("-")[1]) for name in os.listdir(run_dir / "backup"))
    assert steps and steps[-1] < 8, "the run diverges after its first backup"
    newest = run_dir / "backup" / f"step-{steps[-1]:09d}"
    assert f"Kept: the backup of global step {steps[-1]} in {newest}" in message, message
    assert not (run_dir / "model.keras").exists()
    from byol_keras import BYOL  # noqa: F401  (registers BYOL for loading)

    latest = keras.saving.load_model(str(run_dir / "checkpoints" / "latest.keras"), compile=False)
    assert all(np.isfinite(w).all() for w in latest.get_weights())
    assert f"{run_dir / 'checkpoints' / 'latest.keras'} of global step" in message
    for step in steps:  # every backup holds finite weights
        fresh = keras.saving.load_model(str(run_dir / "checkpoints" / "latest.keras"), compile=False)
        fresh.load_weights(str(run_dir / "backup" / f"step-{step:09d}" / "model.weights.h5"))
        assert all(np.isfinite(w).all() for w in fresh.get_weights())


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    run_dir = tmp_path / "run"
    code, err = main_in_process("training.pretrain", capsys, "--preset", "demo", "--out", str(run_dir), "--export",
                      str(a_file / "models"))
    assert_clean_error(code, err, f"cannot write {a_file / 'models'}: --export is not writable")
    assert not (run_dir / "config.json").exists(), "refused before the run began"
    code, err = main_in_process("training.pretrain", capsys, "--preset", "demo", "--out", str(a_file), "--export", "none")
    assert_clean_error(code, err, f"cannot write {a_file}: --out names a file, not a folder")
    code, err = main_in_process("training.linear_eval", capsys, "--encoder", str(tmp_path / "enc.keras"), "--data", "digits",
                      "--out", str(a_file / "linear.json"))
    assert_clean_error(code, err, f"cannot write {a_file}: --out names a file")


def _fill(folder, leave_bytes):
    """Fill the file system of `folder` up to `leave_bytes` free."""
    free = shutil.disk_usage(folder).free
    with open(os.path.join(folder, "filler"), "wb") as f:
        f.write(b"\0" * max(free - leave_bytes, 0))


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs (as root, where a real full disk can be made), else None (the failure is injected)."""
    path = tmp_path / "disk"
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.slow
def test_a_full_disk_while_backing_up_is_one_error_line_and_the_next_run_resumes(tmp_path, capsys, monkeypatch,
                                                                                 small_disk, step_without_xla):
    from byol_keras.experiment import run

    run_dir = (small_disk or tmp_path) / "run"
    assert run(_tiny(run_dir, "--epochs", "1"))["steps"] == 2
    kept = run_dir / "backup" / "step-000000002"
    with monkeypatch.context() as patch:
        if small_disk is not None:  # a real full disk: the next backup's weights do not fit
            _fill(small_disk, leave_bytes=300_000)
        else:  # as h5py reports it
            def full(self, *args, **kwargs):
                raise RuntimeError("Can't write data (file write failed: ..., errno = 28, error message = "
                                   "'No space left on device', ...)")

            patch.setattr(keras.Model, "save_weights", full)
        with pytest.raises(WriteError) as error:
            run(_tiny(run_dir, "--epochs", "2"))
    assert error.value.errno == errno.ENOSPC
    message = str(error.value)
    assert message.startswith(f"cannot write {run_dir / 'backup' / 'step-000000003'}: [Errno 28] No space left on "
                              "device"), message
    assert message.endswith(f"; the backup of global step 2 in {kept} is intact"), message
    assert sorted(os.listdir(run_dir / "backup")) == ["step-000000001", "step-000000002"], "no torn folder left"
    if small_disk is not None:
        os.remove(small_disk / "filler")
    assert run(_tiny(run_dir, "--epochs", "2"))["resumed_from_step"] == 2


def test_one_run_per_folder_and_a_stale_lock_is_taken_over(tmp_path):
    import socket

    warnings = []
    (tmp_path / "run.lock").write_text(json.dumps({"pid": 2**22 + 1, "host": socket.gethostname(), "started": "then"}))
    with run_lock(str(tmp_path), warn=warnings.append) as holder:
        assert holder["pid"] == os.getpid()
        assert warnings == [f"taking over the stale lock {tmp_path / 'run.lock'} of PID {2**22 + 1} on "
                            f"{socket.gethostname()} (started then), which has ended without releasing it"]
        with pytest.raises(RunFolderInUse, match=f"is in use by PID {os.getpid()} on {socket.gethostname()}"):
            with run_lock(str(tmp_path)):
                pass
    with run_lock(str(tmp_path), warn=warnings.append):  # released: taken again without a warning
        pass
    assert len(warnings) == 1


def test_two_exports_never_share_a_version(tmp_path, monkeypatch):
    from byol_keras import export

    def fake_export(model, export_dir, image_size, **kwargs):
        os.makedirs(os.path.join(export_dir, export.ASSETS_EXTRA))
        return {"image_size": image_size}

    monkeypatch.setattr(export, "export_encoder", fake_export)
    assert export.export_version(None, tmp_path, 8)["version"] == 1
    # Another exporter claimed the number this one chose (it read the folder before the other's rename).
    monkeypatch.setattr(export, "next_version", lambda base: 1)
    info = export.export_version(None, tmp_path, 8)
    assert info["version"] == 2 and sorted(os.listdir(tmp_path)) == ["1", "2"]
    with pytest.raises(FileExistsError, match="Version 2 already exists"):
        export.export_version(None, tmp_path, 8, version=2)


def test_a_labelled_folder_without_a_test_split_holds_queries_out_of_the_knn_bank(tmp_path, capsys):
    import tensorflow as tf

    from byol_keras.experiment import HELD_OUT, make_data, resolve

    for label in range(2):
        for i in range(10):
            save_image(str(tmp_path / "data" / f"class{label}" / f"{i:02d}.png"), pattern(16, 16, offset=20 * i + label))
    config = resolve_config(parse_args(["--preset", "demo", "--data", str(tmp_path / "data"), "--batch-size", "4",
                                        "--out", str(tmp_path / "run"), "--export", "none"]))
    config, source = resolve(dict(config, max_pixels=None), tf.distribute.get_strategy())
    assert config["knn_queries"] == HELD_OUT
    data = make_data(config, source)
    (bank, _), (queries, query_y) = data.knn_bank, data.knn_queries
    assert len(bank) + len(queries) == 20 and sorted(query_y.tolist()) == [0, 1]
    # No query is an image of the bank (every image here is different).
    assert not any(np.array_equal(q, b) for q in queries for b in bank)
    assert "has no test/ split; its queries are 2 training images held out of the bank" in capsys.readouterr().out
