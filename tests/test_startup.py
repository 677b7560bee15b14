"""A command's first contact: `--help` and a bad flag without TensorFlow; a run without TensorFlow's start-up log.

Real processes, as a user starts them: the installed console commands and `python -m training.X`. Whether an
answer came without TensorFlow is read from `python -X importtime` (every module the process imported); how long
it took is a benchmark's matter (benchmarks/startup.py), not a test's. The quiet console of a whole run is
checked on test_pretrain.py's demo run.
"""

import os
import re
import subprocess
import sys

import pytest

from byol_keras.cli import quiet
from helpers import ROOT, assert_clean_error

COMMANDS = ("pretrain", "linear_eval", "finetune", "export")
# TensorFlow's C++ log lines and AutoGraph's notices: none of them on a quiet console.
TENSORFLOW_LOG = re.compile(r"^[IWE]\d{4} |cuInit|oneDNN custom operations are on|absl::InitializeLog|AutoGraph",
                            re.MULTILINE)


def _script(command):
    """The installed console command (`byol-linear-eval` for "linear_eval"), beside this Python."""
    path = os.path.join(os.path.dirname(sys.executable), "byol-" + command.replace("_", "-"))
    assert os.path.isfile(path), f"{path} is not installed (pip install -e .)"
    return path


def _imported(importtime_stderr):
    """The modules `python -X importtime` reports as imported."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines() if line.startswith("import time:")}


def _without_tensorflow(result):
    heavy = sorted(m for m in _imported(result.stderr) if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
    assert heavy == [], heavy[:10]


def _quiet_env(**extra):
    """This environment without a TF_CPP_MIN_LOG_LEVEL of the user's (the quiet console is the default)."""
    env = {k: v for k, v in os.environ.items() if k not in (quiet.VARIABLE, quiet.SET_BY_BYOL_KERAS)}
    return dict(env, **extra)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_answers_without_tensorflow_from_both_entry_points(command):
    for argv, prog in (([_script(command)], "byol-" + command.replace("_", "-")),
                       (["-m", f"training.{command}"], f"python -m training.{command}")):
        result = subprocess.run([sys.executable, "-X", "importtime", *argv, "--help"], cwd=ROOT, env=_quiet_env(),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith(f"usage: {prog}"), result.stdout[:200]
        assert "--debug" in result.stdout
        _without_tensorflow(result)
        assert not TENSORFLOW_LOG.search(result.stderr), result.stderr[-2000:]


@pytest.mark.parametrize("argv, flag", [
    (["-m", "training.pretrain", "--epochs", "0"], "--epochs"),
    (["-m", "training.pretrain", "--preset", "no-such-preset"], "--preset"),
    (["-m", "training.linear_eval", "runs/x", "--data", "digits", "--batch-size", "many"], "--batch-size"),
    (["-m", "training.finetune", "runs/x", "--data", "digits", "--fraction", "2"], "--fraction"),
])
def test_a_bad_flag_value_answers_without_tensorflow(argv, flag):
    result = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=ROOT, env=_quiet_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("python -m training.")]
    assert len(errors) == 1 and flag in errors[0], result.stderr[-2000:]
    _without_tensorflow(result)


WIDTH_ON_RESNET50 = [sys.executable, "-m", "training.pretrain", "--preset", "imagenet-resnet50-100", "--width", "8"]


def test_width_on_resnet50_stops_before_any_data_and_the_users_log_level_brings_tensorflows_log_back(tmp_path):
    # --width sets byol_keras' ResNet-18 and ConvNet only; the preset's ResNet-50 (Keras') has its own. The error
    # comes before the data (imagenet2012, which this machine does not hold: reading it would be another error).
    flags = ["--out", str(tmp_path / "run"), "--export", "none"]
    quiet_run = subprocess.run(WIDTH_ON_RESNET50 + flags, cwd=ROOT, env=_quiet_env(), capture_output=True,
                               text=True, timeout=300)
    assert_clean_error(quiet_run.returncode, quiet_run.stderr, "`width`", "resnet50", "--width")
    assert not TENSORFLOW_LOG.search(quiet_run.stderr), quiet_run.stderr[-2000:]
    assert not (tmp_path / "run").exists()
    # The other half: a user who sets TF_CPP_MIN_LOG_LEVEL gets TensorFlow's log as TensorFlow writes it.
    loud_run = subprocess.run(WIDTH_ON_RESNET50 + flags, cwd=ROOT, env=_quiet_env(TF_CPP_MIN_LOG_LEVEL="0"),
                              capture_output=True, text=True, timeout=300)
    assert_clean_error(loud_run.returncode, loud_run.stderr, "`width`", "resnet50", "--width")
    assert re.search(r"^[IWE]\d{4} ", loud_run.stderr, re.MULTILINE), loud_run.stderr[-2000:]


def test_kept_lines_drop_tensorflows_start_up_lines_and_keep_the_rest():
    start_up = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "I0000 00:00:1796676092.282872    3714 port.cc:153] oneDNN custom operations are on. You may see ...\n",
        "I0000 00:00:1796676092.283373    3714 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
        "GPU will not be used.\n",
        "I0000 00:00:1796676092.726337    3714 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...\n",
        "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
        "appropriate compiler flags.\n",
    ]
    cuinit = ("E0000 00:00:1796676307.456397   27566 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA "
              "error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
    real = ["/x/numpy/core/thing.py:12: UserWarning: something real\n",
            "W0000 00:00:1796676092.9 3714 some.cc:1] a real warning\n",
            "E0000 00:00:1796676092.9 3714 some.cc:1] a real error\n"]
    assert quiet.kept_lines(start_up + real[:1] + [cuinit] + real[1:]) == real
    # With a CUDA driver installed (no "Could not find cuda drivers" line), a failed cuInit is a real error.
    with_driver = [line for line in start_up if "cudart_stub" not in line]
    assert quiet.kept_lines(with_driver + [cuinit] + real) == [cuinit] + real


def test_start_tensorflow_changes_nothing_once_tensorflow_is_imported():
    import tensorflow  # noqa: F401

    environ = {}
    assert quiet.start_tensorflow(environ=environ) == "too late" and environ == {}
