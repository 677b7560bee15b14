"""Every benchmark script's `--help` runs: its imports resolve and its flags parse.

The benchmarks are never run by the suite (they print figures), so a broken import in one of them is
found only here. All of our scripts run in one subprocess (`runpy`, as `python -m benchmarks.X --help`
runs them; TensorFlow is imported once), the peer's scripts (torch, lightly) in one subprocess of the
peer's Python, as they are documented to run.
"""

import ast
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "benchmarks")
PEER_PYTHON = os.environ.get("BYOL_PEER_PYTHON", "/tmp/peer/bin/python")

# Runs each named script with `--help` and writes {name: {"code": exit code or error, "out": help text}}.
RUNNER = r"""
import contextlib, io, json, runpy, sys, traceback
out_path, kind, names = sys.argv[1], sys.argv[2], sys.argv[3:]
results = {}
for name in names:
    text = io.StringIO()
    sys.argv = [name, "--help"]
    try:
        with contextlib.redirect_stdout(text):
            if kind == "module":
                runpy.run_module("benchmarks." + name, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path("benchmarks/" + name + ".py", run_name="__main__")
        code = "returned without exiting"
    except SystemExit as exit:
        code = exit.code
    except BaseException:
        code = traceback.format_exc()
    results[name] = {"code": code, "out": text.getvalue()}
with open(out_path, "w") as f:
    json.dump(results, f)
"""


def _scripts():
    """(name, runs in the peer's Python) for every benchmarks/*.py with a `__main__` block."""
    scripts = []
    for file in sorted(os.listdir(FOLDER)):
        if not file.endswith(".py"):
            continue
        with open(os.path.join(FOLDER, file)) as f:
            source = f.read()
        if 'if __name__ == "__main__":' not in source:
            continue
        top_level = {alias.name.split(".")[0] for node in ast.parse(source).body
                     if isinstance(node, (ast.Import, ast.ImportFrom))
                     for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
        scripts.append((file[:-3], "torch" in top_level))
    return scripts


SCRIPTS = _scripts()


def _run(python, kind, names, tmp_path_factory):
    out_path = str(tmp_path_factory.mktemp("help") / "results.json")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    process = subprocess.run([python, "-c", RUNNER, out_path, kind, *names], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    with open(out_path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    return _run(sys.executable, "module", [name for name, peer in SCRIPTS if not peer], tmp_path_factory)


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    if not os.path.exists(PEER_PYTHON):
        pytest.skip(f"the peer's Python (torch, lightly) is not at {PEER_PYTHON} (set BYOL_PEER_PYTHON)")
    return _run(PEER_PYTHON, "path", [name for name, peer in SCRIPTS if peer], tmp_path_factory)


def test_every_script_is_found():
    names = {name for name, _ in SCRIPTS}
    assert {"end_to_end", "step", "pipeline", "paired", "peer_quality"} <= names
    assert "report" not in names  # a library for the scripts, no command
    assert {name for name, peer in SCRIPTS if peer} == {"peer_parity_torch", "peer_quality", "peer_step_small"}


@pytest.mark.parametrize("name", [name for name, peer in SCRIPTS if not peer])
def test_help_runs(name, ours):
    result = ours[name]
    assert result["code"] == 0, result["code"]
    assert result["out"].startswith("usage:"), result["out"]


@pytest.mark.parametrize("name", [name for name, peer in SCRIPTS if peer])
def test_peer_help_runs(name, peers):
    result = peers[name]
    assert result["code"] == 0, result["code"]
    assert result["out"].startswith("usage:"), result["out"]


def test_the_peer_locations_are_flags():
    """The peer's Python and the folder of its scripts come from `--peer-python` and `--peer-dir` (defaults: the
    environment variables, else the documented set-up), never from a path written into a script."""
    from benchmarks import paired

    args = paired.parse_args(["all", "--peer-python", "/envs/lightly/bin/python", "--peer-dir", "/src/peer-bench"])
    table = paired.figures(args)
    assert set(table) == {"step", "step-demo", "pipeline32", "pipeline96", "pipeline224", "pipeline224-mixed"}
    for name, (peer, ours) in table.items():
        assert peer[0] == "/envs/lightly/bin/python", (name, peer)
        assert os.path.dirname(peer[1]) == ("/src/peer-bench" if name != "step-demo" else FOLDER), (name, peer)
    # Their defaults, from the environment variables when set.
    script = "from benchmarks import paired; a = paired.parse_args(['step']); print(a.peer_python); print(a.peer_dir)"
    env = dict(os.environ, BYOL_PEER_PYTHON="/opt/peer/bin/python", BYOL_PEER_DIR="/opt/bench", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["/opt/peer/bin/python", "/opt/bench"], out.stderr[-2000:]


def _plain(value):
    """A call's argument in comparable form: a source by its name and size, views by their configuration."""
    from byol_keras.views import BYOLAugment
    from byol_keras.sources import Source

    if isinstance(value, Source):
        return ("Source", value.name, value.num_examples, value.max_pixels)
    if isinstance(value, BYOLAugment):
        config = {k: v for k, v in value.get_config().items() if k != "name"}  # a layer's name counts instances
        return ("BYOLAugment", json.dumps(config, sort_keys=True, default=str))
    return value


@pytest.mark.parametrize("preset, size, blur", [("cifar10-resnet18", 32, False), ("stl10-resnet18", 96, True)])
def test_the_pipeline_benchmark_builds_the_data_byol_pretrain_builds(tmp_path, monkeypatch, preset, size, blur):
    """For the same flags, `benchmarks.pipeline` and `byol-pretrain` open the same source and build the same views
    and stream: the calls to `load_source` and `pretrain_dataset` match, every argument and default."""
    from benchmarks import pipeline
    from byol_keras import data, sources
    from byol_keras import experiment
    from byol_keras.cli import pretrain
    from helpers import class_folder, fake_strategy

    folder = str(tmp_path / "images")
    class_folder(folder, per_class=(3, 3, 3), size=20)
    calls = []

    def spy(name, real):
        def call(*args, **kwargs):
            calls.append((name, tuple(_plain(a) for a in args), {k: _plain(v) for k, v in kwargs.items()}))
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(data, "load_source", spy("load_source", sources.load_source))
    monkeypatch.setattr(data, "pretrain_dataset", spy("pretrain_dataset", data.pretrain_dataset))

    flags = ["--preset", preset, "--data", folder, "--image-size", str(size), "--batch-size", "4"]
    config, source = experiment.resolve(pretrain.resolve_config(pretrain.parse_args(flags)), fake_strategy())
    experiment.make_data(config, source)
    command_line = calls[:2]
    calls.clear()
    _, bench_source, augment, _, changes = pipeline.build(
        pipeline.parse_args(["--data", folder, "--size", str(size), "--batch", "4"]))
    assert [name for name, _, _ in command_line] == ["load_source", "pretrain_dataset"]
    assert calls == command_line
    assert changes == [] and augment.blur == blur
    # An option that leaves the user's path is named, and the figure's name says so.
    _, _, _, _, changes = pipeline.build(
        pipeline.parse_args(["--data", folder, "--size", str(size), "--batch", "4", "--cache", "0"]))
    assert changes == ["cache=0"]
