"""The command line as a user meets it: a bad flag is one line on stderr naming the flag, exit status 2.

The checks call each command's `main` in this process (the same parser and error handling `python -m
training.X` and the installed commands run); `test_the_programs_exit_cleanly_on_a_bad_flag` starts each
entry point once as a program.
"""

import json
import os
import subprocess
import sys

import pytest

from helpers import assert_clean_error, main_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("training.pretrain", "training.linear_eval", "training.finetune", "training.export")


@pytest.fixture
def run(capsys):
    """`run(module, *args)` → `(exit status, stderr)` of `python -m module args`, called in this process."""
    return lambda module, *args: main_in_process(module, capsys, *args)


@pytest.mark.slow
def test_the_programs_exit_cleanly_on_a_bad_flag(tmp_path):
    # Each entry point as a user starts it, all four at once: exit status 2, one line, no traceback.
    processes = {module: subprocess.Popen([sys.executable, "-m", module, "--epochs", "0"], cwd=ROOT,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for module in MODULES}
    for module, process in processes.items():
        _, stderr = process.communicate(timeout=300)
        assert_clean_error(process.returncode, stderr, f"python -m {module}: error:")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--preset", "nope"], ["--preset", "'nope'", "cifar10-resnet18-short"]),
        (["--data", "/nonexistent/folder"], ["--data", "no such folder", "/nonexistent/folder"]),
        (["--batch-size", "0"], ["--batch-size", "positive integer", "got 0"]),
        (["--epochs", "-1"], ["--epochs", "positive integer", "got -1"]),
        (["--epochs", "three"], ["--epochs", "'three'"]),
        (["--base-tau", "1.5"], ["--base-tau", "[0, 1]", "1.5"]),
        (["--learning-rate", "-0.1"], ["--learning-rate", "-0.1"]),
        (["--verbose", "3"], ["--verbose", "auto, 0, 1 or 2", "'3'"]),
    ],
)
def test_pretrain_rejects_bad_flags_cleanly(run, args, expected):
    assert_clean_error(*run("training.pretrain", *args), *expected)


def test_pretrain_says_a_single_file_is_not_a_dataset_folder(run, tmp_path):
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert_clean_error(*run("training.pretrain", "--data", str(image)), "--data", "single file",
                        "not a dataset folder")


def test_a_library_error_names_the_flag_behind_it(run, tmp_path):
    # The library finds this one (the batch does not fit the 1,437 training digits): one line, exit 2, and
    # the flag that set the argument, after the library's own message.
    args = ["--batch-size", "5000", "--epochs", "1", "--out", str(tmp_path), "--export", "none"]
    code, stderr = run("training.pretrain", *args)
    assert_clean_error(code, stderr, "batch_size=5000", "--batch-size")
    # With --debug the error is raised as it is, so the interpreter shows its traceback (exit status 1).
    with pytest.raises(ValueError, match="batch_size=5000"):
        run("training.pretrain", *args, "--debug")


@pytest.mark.parametrize("module", ["training.linear_eval", "training.finetune"])
def test_evaluation_commands_reject_bad_flags_cleanly(run, module, tmp_path):
    assert_clean_error(*run(module, str(tmp_path), "--data", "digits", "--epochs", "0"), "--epochs", "got 0")
    assert_clean_error(*run(module, str(tmp_path), "--data", str(tmp_path / "missing")), "--data", "no such folder")
    assert_clean_error(*run(module, "--data", "digits"), "RUN_DIR or --encoder")


def test_evaluation_command_reports_a_run_directory_without_a_model(run, tmp_path):
    code, stderr = run("training.linear_eval", str(tmp_path), "--data", "digits")
    assert_clean_error(code, stderr, str(tmp_path))


def test_export_rejects_a_missing_run_directory(run, tmp_path):
    assert_clean_error(*run("training.export", str(tmp_path / "nope")), "run_dir", "no such folder")
    assert_clean_error(*run("training.export", str(tmp_path), "--version", "0"), "--version", "got 0")


def test_short_run_hint_points_to_the_short_preset():
    from byol_keras.cli.pretrain import short_run_hint

    hint = short_run_hint({"preset": "cifar10-resnet18", "epochs": 3})
    assert "--epochs 3" in hint and "1000-epoch" in hint and "--preset cifar10-resnet18-short" in hint
    assert short_run_hint({"preset": "cifar10-resnet18", "epochs": 400}) is None
    assert short_run_hint({"preset": "cifar10-resnet18-short", "epochs": 3}) is None
    assert "imagenet-resnet50-100" in short_run_hint({"preset": "imagenet-resnet50", "epochs": 10})


def test_pretrain_refuses_to_resume_a_run_with_another_batch_size(run, tmp_path):
    # A run folder with a backup (its state and a weights file: nothing is loaded before the check) and the
    # config.json of a run with `--batch-size 64`. The same command without that flag asks for the preset's 128: it
    # stops before any work, naming the flag, the run's value and the one given.
    from byol_keras.cli.pretrain import parse_args, resolve_config
    from byol_keras.decoding import DEFAULT_MAX_PIXELS

    flags = ["--preset", "demo", "--out", str(tmp_path), "--export", "none"]
    stored = dict(resolve_config(parse_args(flags + ["--batch-size", "64"])), max_pixels=DEFAULT_MAX_PIXELS)
    (tmp_path / "config.json").write_text(json.dumps(stored))
    backup = tmp_path / "backup" / "step-000000004"
    backup.mkdir(parents=True)
    (backup / "state.json").write_text(json.dumps({"step": 4, "epoch": 2, "batch": 0, "steps_per_epoch": 2}))
    import h5py

    with h5py.File(backup / "model.weights.h5", "w"):  # a weights file that opens (it is not loaded)
        pass
    assert_clean_error(*run("training.pretrain", *flags), "--batch-size", "the run has --batch-size 64",
                        "this command asks for --batch-size 128", str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(json.dumps(stored))  # left as it was
