"""`python -m benchmarks.gpu`, the command prepared for a GPU host, run tiny on this CPU so that it keeps working.

The full tiny run checks every figure a GPU user reads (the step, the supervised ratio, the scaling ratio over two
logical CPU devices, the input side, memory) and that each derived figure is computed from the lines printed
beside it; a second run checks that `--budget-s` ends the process at its deadline with what it did.
"""

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [sys.executable, "-m", "benchmarks.gpu", "--tiny", "--threads", "2"]


def _lines(output):
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _by_kind(lines):
    kinds = {}
    for line in lines:
        kinds.setdefault(line["benchmark"], []).append(line)
    return kinds


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)


@pytest.mark.slow
def test_tiny_run_prints_every_figure(tmp_path):
    # The smallest network and views the flags give (one 4-wide convolution, 16 px): the sizes are not what this
    # checks, and each configuration's cost is mostly building and tracing its model (two of them per replica).
    command = TINY + ["--cpu-devices", "2", "--precisions", "float32", "--jit", "0", "--budget-s", "300",
                      "--encoder", '{"name": "convnet", "widths": [4]}', "--size", "16",
                      "--photos-dir", str(tmp_path / "photos")]
    process = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    lines = _lines(process.stdout)
    kinds = _by_kind(lines)
    assert lines[0]["benchmark"] == "plan" and lines[-1]["benchmark"] == "summary"
    assert "skipped" not in kinds and "budget_exhausted" not in kinds
    assert (lines[0]["devices"]["type"], lines[0]["devices"]["count"]) == ("CPU", 2)

    (byol,) = kinds["byol_step"]
    assert byol["config"]["batch_per_device"] == 16 and byol["config"]["out_of_memory_at"] == []
    assert byol["config"]["size"] == 16 and lines[0]["sizes"]["encoder"] == {"name": "convnet", "widths": [4]}
    assert byol["config"]["precision"] == "float32" and byol["config"]["jit_compile"] is False
    assert byol["median"] > 0 and byol["peak_memory_mb"] > 0 and byol["memory_source"]

    (supervised,) = kinds["supervised_step"]
    (ratio,) = kinds["byol_to_supervised"]
    assert supervised["config"]["batch_per_device"] == 16
    assert ratio["ratio"] == pytest.approx(byol["median"] / supervised["median"], abs=1e-3)
    assert ratio["meets_bar"] == (ratio["ratio"] >= 0.33) and ratio["flops_ratio"] == pytest.approx(3 / 8)

    one, two = kinds["scaling"]
    (scaling,) = kinds["scaling_ratio"]
    assert (one["config"]["replicas"], two["config"]["replicas"]) == (1, 2)
    assert (one["config"]["global_batch"], two["config"]["global_batch"]) == (16, 32)
    assert scaling["scaling_ratio"] == pytest.approx(two["median"] / one["median"], abs=1e-3)
    assert scaling["efficiency"] == pytest.approx(scaling["scaling_ratio"] / 2, abs=1e-3)
    assert scaling["devices_share_cores"] is True and two["sync_bn"] is True

    (fed,) = kinds["input"]
    assert fed["config"]["views_on"] == "device" and fed["config"]["photos"] == 40
    assert fed["median"] > 0 and fed["pipeline_alone"]["median"] > 0
    assert fed["step_alone"] == byol["median"]
    assert fed["bound"] == ("host" if fed["pipeline_alone"]["median"] < byol["median"] else "device")

    summary = lines[-1]
    assert summary["cut_short"] is False and summary["skipped"] == []
    assert summary["byol_step"][0]["images_per_s"] == byol["median"]
    assert summary["supervised_step"][0]["byol_to_supervised"] == ratio["ratio"]
    assert summary["scaling"]["scaling_ratio"] == scaling["scaling_ratio"]
    assert summary["input"]["bound"] == fed["bound"]


@pytest.mark.slow
def test_budget_ends_the_run_at_its_deadline(tmp_path):
    budget = 3.0
    process = subprocess.Popen(TINY + ["--budget-s", str(budget), "--photos-dir", str(tmp_path / "photos")],
                               cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = process.stdout.readline()  # the plan, printed as the budget starts
    started = time.perf_counter()
    rest = process.stdout.read()
    process.wait(timeout=120)
    elapsed = time.perf_counter() - started
    assert process.returncode == 0
    assert elapsed < budget + 3.0, elapsed
    lines = _lines(first + rest)
    kinds = _by_kind(lines)
    assert lines[0]["benchmark"] == "plan" and lines[-1]["benchmark"] == "summary"
    (exhausted,) = kinds["budget_exhausted"]
    assert exhausted["budget_s"] == budget and exhausted["interrupted"]["what"] == "byol_step"
    assert lines[-1]["cut_short"] is True and lines[-1]["byol_step"] == []


def test_batch_search_takes_the_first_batch_that_fits():
    """An out-of-memory error at the largest batch moves on to the next; the line says which batches failed."""
    import keras
    import tensorflow as tf

    from benchmarks import gpu

    args = gpu.parse_args(["--tiny", "--budget-s", "60"])
    run = gpu.Run(args, dict(gpu.TINY), gpus=[])
    built = []

    def make(batch):
        built.append(batch)
        if batch > 8:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        return model

    def data(batch):
        return tf.data.Dataset.from_tensors((tf.zeros((batch, 3)), tf.zeros((batch, 1)))).repeat()

    try:
        line, _ = run.measure("byol_step", make, "float32", False, (16, 8, 4), data, remaining=1)
    finally:
        run.budget.cancel()
    assert built == [16, 8]
    assert line["config"]["batch_per_device"] == 8 and line["config"]["out_of_memory_at"] == [16]
    assert len(line["runs"]) == gpu.TINY["runs"] and line["median"] > 0


def test_byol_builds_on_the_presets_resnet50():
    """The GPU command's encoder: `encoders.resnet50` returned a list of one output, which BYOL refused."""
    import numpy as np

    from byol_keras.byol import BYOL
    from byol_keras.encoders import resnet50

    encoder = resnet50(input_shape=(32, 32, 3))
    model = BYOL(encoder, projection_dim=8, projection_hidden_dim=16, prediction_hidden_dim=16, total_steps=10)
    assert tuple(model(np.zeros((2, 32, 32, 3), "float32")).shape) == (2, 2048)


def test_photo_folder_without_cifar10_is_made_of_smooth_random_images(tmp_path, monkeypatch):
    """A GPU host with the code alone has no ../shared/data/cifar10: the input side makes its own photos."""
    from PIL import Image

    from benchmarks import gpu, report
    from byol_keras.sources import load_source

    monkeypatch.setattr(report, "DEFAULT_CIFAR", str(tmp_path / "absent"))
    folder, made_from = gpu.photo_folder(str(tmp_path / "photos"), 20, 40, 30)
    assert made_from == "smooth random images"
    source = load_source(folder, verify=False)
    assert source.num_examples == 20 and source.num_classes == 10
    first = sorted(os.path.join(root, f) for root, _, files in os.walk(folder) for f in files)[0]
    with Image.open(first) as image:
        assert (image.size, image.format) == ((40, 30), "JPEG")
