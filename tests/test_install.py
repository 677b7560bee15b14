"""byol_keras as a user installs it: the wheel, installed on its own into a folder, used from another folder.

The wheel is built from a copy of the clone (a build in place would leave build/ and *.egg-info in it),
installed with `pip install --no-deps --target` (the dependencies are this interpreter's), and used by a
fresh interpreter whose working directory is outside the clone and whose only extra path is the target.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Top-level packages of the clone that must never be installed: they would collide with a user's own.
CLONE_ONLY = ("training", "benchmarks", "tests")
COMMANDS = ("byol-pretrain", "byol-linear-eval", "byol-finetune", "byol-export")

# Run by the installed package's interpreter, from outside the clone, with the target folder as argv[1].
USE_THE_INSTALL = r"""
import importlib.metadata as metadata
import os
import re
import sys

import numpy as np
import tensorflow as tf

import byol_keras
from byol_keras import BYOL, LARS, BYOLAugment, WarmupCosine, convnet

target = os.path.realpath(sys.argv[1])
where = os.path.realpath(byol_keras.__file__)
assert where.startswith(target + os.sep), f"byol_keras imported from {where}, not from the install in {target}"
distribution = metadata.distribution("byol-keras")
assert byol_keras.__version__ == distribution.version, (byol_keras.__version__, distribution.version)
commands = {e.name: e for e in distribution.entry_points if e.group == "console_scripts"}
assert sorted(commands) == sorted(COMMANDS), sorted(commands)
for entry in commands.values():
    function = entry.load()
    assert callable(function) and os.path.realpath(sys.modules[function.__module__].__file__).startswith(target)

images = np.random.default_rng(0).integers(0, 256, size=(8, 8, 8, 3), dtype=np.uint8)
# XLA off in the views and the step: the install is under test here, XLA in tests/test_fast_paths.py.
augment = BYOLAugment(image_size=8, blur=False, seed=0, jit_compile=False)
dataset = tf.data.Dataset.from_tensor_slices(images).batch(4, drop_remainder=True).map(augment)
model = BYOL(convnet((4,), input_shape=(8, 8, 3)), projection_dim=4, projection_hidden_dim=8,
             prediction_hidden_dim=8, total_steps=2)
model.compile(optimizer=LARS(WarmupCosine(0.1, warmup_steps=0, total_steps=2), momentum=0.9), jit_compile=False)
history = model.fit(dataset, epochs=1, verbose=0)
assert int(model.optimizer.iterations.numpy()) == 2 and np.isfinite(history.history["loss"][-1])
print("installed byol_keras", byol_keras.__version__, "fitted 2 steps")
""".replace("COMMANDS", repr(COMMANDS))


def _build_wheel(source, out):
    """`pip wheel` of `source`; offline (no build isolation) when this interpreter has what setuptools needs."""
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(source)]
    if importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel"):
        command.insert(5, "--no-build-isolation")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = out.glob("byol_keras-*.whl")
    return wheel


# The tests that use this module fixture share a pytest-xdist worker (tests/conftest.py), so it is made once.


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`(wheel, target)`: the built wheel and the folder it was installed into."""
    base = tmp_path_factory.mktemp("install")
    source = base / "clone"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "saved_models"))
    wheel = _build_wheel(source, base / "dist")
    target = base / "target"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
                             str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return wheel, target


def _outside_the_clone(tmp_path, target):
    """Keyword arguments for `subprocess.run` in a folder outside the clone, with only `target` added to the path."""
    env = dict(os.environ, PYTHONPATH=str(target))
    return dict(cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_wheel_holds_the_library_only(installed):
    wheel, target = installed
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    stray = sorted(top_level & set(CLONE_ONLY))
    assert not stray, (f"the wheel would install top-level packages {stray} into site-packages, where they "
                       "collide with a user's own: pyproject.toml's package discovery must include byol_keras only")
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"byol_keras"}, sorted(top_level)
    assert "byol_keras/cli/pretrain.py" in names
    assert not [name for name in names if os.path.basename(name).startswith(("test_", "conftest"))], names
    for name in CLONE_ONLY:
        assert not (target / name).exists(), f"{name}/ was installed into {target}"


@pytest.mark.slow
def test_the_installed_package_imports_and_fits_from_another_folder(installed, tmp_path):
    _, target = installed
    result = subprocess.run([sys.executable, "-c", USE_THE_INSTALL, str(target)], **_outside_the_clone(tmp_path, target))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fitted 2 steps" in result.stdout


@pytest.mark.slow
def test_the_installed_command_runs_from_another_folder(installed, tmp_path):
    _, target = installed
    for command in COMMANDS:  # pip puts the console scripts of a --target install in target/bin
        assert (target / "bin" / command).exists(), sorted(os.listdir(target / "bin"))
    result = subprocess.run([str(target / "bin" / "byol-pretrain"), "--help"], **_outside_the_clone(tmp_path, target))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: byol-pretrain") and "--preset" in result.stdout, result.stdout[:500]


def test_keras_cv_and_keras_hub_are_extras_not_dependencies():
    # keras-cv is in maintenance and pulls the old keras-core package: a user asks for it (issue 32).
    import tomllib

    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    names = [re.split(r"[<>=\[ ]", requirement)[0] for requirement in project["dependencies"]]
    assert "keras-cv" not in names and "keras-hub" not in names, names
    extras = project["optional-dependencies"]
    assert extras["keras-cv"] == ["keras-cv>=0.9.0,<0.10"] and extras["keras-hub"] == ["keras-hub>=0.32.0,<0.33"]
