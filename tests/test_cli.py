"""The command line as a user meets it: a bad flag is one line on stderr naming the flag, exit status 2."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args, timeout=300):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)
    return result.returncode, result.stderr


def _assert_clean_error(returncode, stderr, *expected):
    assert returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    # TensorFlow's own C++ log lines may precede it; the command's error is the one line in argparse's form.
    error_lines = [line for line in stderr.splitlines() if line.startswith("python -m training.")]
    assert len(error_lines) == 1, stderr[-2000:]
    for text in expected:
        assert text in error_lines[0], (text, error_lines[0])


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
def test_pretrain_rejects_bad_flags_cleanly(args, expected):
    _assert_clean_error(*_run("training.pretrain", *args), *expected)


def test_pretrain_says_a_single_file_is_not_a_dataset_folder(tmp_path):
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    _assert_clean_error(*_run("training.pretrain", "--data", str(image)), "--data", "single file",
                        "not a dataset folder")


@pytest.mark.slow
def test_a_library_error_names_the_flag_behind_it(tmp_path):
    # The library finds this one (the batch does not fit the 1,437 training digits): one line, exit 2, and
    # the flag that set the argument, after the library's own message.
    code, stderr = _run("training.pretrain", "--batch-size", "5000", "--epochs", "1", "--out", str(tmp_path),
                        "--export", "none")
    _assert_clean_error(code, stderr, "batch_size=5000", "--batch-size")
    # With --debug the traceback is there for whoever wants it.
    code, stderr = _run("training.pretrain", "--batch-size", "5000", "--epochs", "1", "--out", str(tmp_path),
                        "--export", "none", "--debug")
    assert code == 1 and "Traceback" in stderr and "ValueError" in stderr


@pytest.mark.parametrize("module", ["training.linear_eval", "training.finetune"])
def test_evaluation_commands_reject_bad_flags_cleanly(module, tmp_path):
    _assert_clean_error(*_run(module, str(tmp_path), "--data", "digits", "--epochs", "0"), "--epochs", "got 0")
    _assert_clean_error(*_run(module, str(tmp_path), "--data", str(tmp_path / "missing")), "--data", "no such folder")
    _assert_clean_error(*_run(module, "--data", "digits"), "RUN_DIR or --encoder")


def test_evaluation_command_reports_a_run_directory_without_a_model(tmp_path):
    code, stderr = _run("training.linear_eval", str(tmp_path), "--data", "digits")
    _assert_clean_error(code, stderr, str(tmp_path))


def test_export_rejects_a_missing_run_directory(tmp_path):
    _assert_clean_error(*_run("training.export", str(tmp_path / "nope")), "run_dir", "no such folder")
    _assert_clean_error(*_run("training.export", str(tmp_path), "--version", "0"), "--version", "got 0")


def test_short_run_hint_points_to_the_short_preset():
    from byol_keras.cli.pretrain import short_run_hint

    hint = short_run_hint({"preset": "cifar10-resnet18", "epochs": 3})
    assert "--epochs 3" in hint and "1000-epoch" in hint and "--preset cifar10-resnet18-short" in hint
    assert short_run_hint({"preset": "cifar10-resnet18", "epochs": 400}) is None
    assert short_run_hint({"preset": "cifar10-resnet18-short", "epochs": 3}) is None
    assert "imagenet-resnet50-100" in short_run_hint({"preset": "imagenet-resnet50", "epochs": 10})
