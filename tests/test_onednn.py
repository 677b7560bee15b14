"""byol_keras.onednn and the oneDNN crash it works around: who turns the kernels on, what a run records, the
one line a library user gets when they are off, and the strided 1×1 convolution that used to corrupt the heap.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it starts, so everything that depends on its value at
start-up runs in a subprocess with its own environment.
"""

import json
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras import onednn
from byol_keras.encoders import resnet18
from byol_keras import layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(arguments, env_changes):
    """`python ARGUMENTS` from the clone's root, started, with `env_changes` applied (None removes a variable)."""
    env = {**os.environ, **env_changes}
    env = {name: value for name, value in env.items() if value is not None}
    return subprocess.Popen([sys.executable, *arguments], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process, timeout=300):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def test_use_onednn_sets_the_variable_unless_someone_chose():
    env = {}
    assert onednn.use_onednn(env, tensorflow_imported=False) == "set"
    assert env == {onednn.VARIABLE: "1", onednn.SET_BY_BYOL_KERAS: "1"}
    for value in ("0", "1"):  # the user's choice wins, either way
        env = {onednn.VARIABLE: value}
        assert onednn.use_onednn(env, tensorflow_imported=False) == "user" and env == {onednn.VARIABLE: value}
    env = {}
    assert onednn.use_onednn(env, tensorflow_imported=True) == "too late" and env == {}


# Prints this process's record after importing byol_keras first. (The record of a process that imported TensorFlow
# first is `_COMPILE_TWICE`'s.)
_STATE = """
import byol_keras
from byol_keras.onednn import onednn_state
import json; print(json.dumps(onednn_state()))
"""

# The CPU allocator of a process with oneDNN off (malloc by TensorFlow's default), after importing byol_keras:
# TensorFlow imported first but no operation run yet (still in time), or an operation run first (too late).
_ALLOCATOR = """
import sys
import tensorflow as tf
if sys.argv[1] == "operation-first":
    tf.constant(0)
import byol_keras
from byol_keras.onednn import allocator_state
import json; print(json.dumps(allocator_state()))
"""

# A library user's script that imported TensorFlow first, on a CPU where TensorFlow's default is off: emulated
# by starting TensorFlow with the variable at 0 and then removing it, which is the state such a user has. No
# operation runs before byol_keras is imported, so this process is also `_ALLOCATOR`'s "tensorflow-first" case
# and `_STATE`'s (one TensorFlow start-up for all three): its last two lines are the oneDNN and allocator records.
_COMPILE_TWICE = """
import os
import tensorflow as tf
del os.environ["TF_ENABLE_ONEDNN_OPTS"]
os.environ.pop("BYOL_KERAS_SET_ONEDNN", None)
import keras
from byol_keras import BYOL, convnet
for _ in range(2):
    model = BYOL(convnet((4,), input_shape=(8, 8, 3)), projection_dim=4, projection_hidden_dim=8,
                 prediction_hidden_dim=8, total_steps=2)
    model.compile(optimizer="sgd")
print("compiled", model.jit_compile)
from byol_keras.onednn import allocator_state, onednn_state
import json; print(json.dumps(onednn_state())); print(json.dumps(allocator_state()))
"""

# The crash: oneDNN's jit_1x1 backward-weights kernel and a strided 1×1 convolution with few input channels.
# Issue 21's command (aborted with "corrupted size vs. prev_size" 5 of 5 times under AVX2 with one thread; any
# inter-op count), and the same fit at 64 px with two threads, which crashed on AVX-512 with no cap at all.
# `--jit 0`: TensorFlow's own kernels, where the crash was (with oneDNN off, "auto" would pick XLA's).
_STEP = ["--batch", "4", "--width", "4", "--hidden", "16", "--projection-dim", "8", "--steps", "1", "--warmup", "0",
         "--runs", "1", "--no-matmul", "--jit", "0"]
_CRASHED = {
    "16 px, 1 thread, AVX2": (["--size", "16", "--threads", "1", "--inter-threads", "3"], {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    "64 px, 2 threads, native": (["--size", "64", "--threads", "2", "--inter-threads", "1"], {}),
}
# `python -m benchmarks.step FLAGS` (which imports byol_keras before TensorFlow), then the thread pools read
# back in the same process (they can only be set before TensorFlow starts, hence a process of its own).
_STEP_THEN_POOLS = (
    "import sys, runpy; sys.argv = ['step'] + sys.argv[1:]; "
    "runpy.run_module('benchmarks.step', run_name='__main__'); import tensorflow as tf; "
    "print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())"
)

_UNSET = {onednn.VARIABLE: None, onednn.SET_BY_BYOL_KERAS: None, onednn.ALLOCATOR_VARIABLE: None,
          onednn.SET_ALLOCATOR_BY_BYOL_KERAS: None, onednn.ALLOCATOR_LIMIT_VARIABLE: None}


# The tests that use this module fixture share a pytest-xdist worker (tests/conftest.py), so it is made once.


@pytest.fixture(scope="module")
def programs():
    """Every program of this module (TensorFlow reads the variables only when it starts), four at a time:
    `{key: (returncode, stdout, stderr)}`.

    - `("step", name, setting)`: benchmarks/step.py in a configuration that crashed, with the user's
      `TF_ENABLE_ONEDNN_OPTS=setting`; its JSON line also records the user's choice;
    - `"state"`: the oneDNN record of a process that imports byol_keras first, with the variable unset;
    - `"compile twice"`: a library user whose TensorFlow started with oneDNN off, compiling BYOL twice;
    - `("allocator", order, value)`: the CPU allocator's record with oneDNN off and `TF_CPU_ALLOCATOR_USE_BFC=value`
      (`("allocator", "tensorflow-first", None)` is the "compile twice" process, whose oneDNN record is also
      that of a process that imported TensorFlow first).
    """
    commands = {("step", name, setting): (["-c", _STEP_THEN_POOLS] + _STEP + flags,
                                          {**env, **_UNSET, onednn.VARIABLE: setting})
                for name, (flags, env) in _CRASHED.items() for setting in ("0", "1")}
    commands["state"] = (["-c", _STATE], _UNSET)
    commands["compile twice"] = (["-c", _COMPILE_TWICE], {**_UNSET, onednn.VARIABLE: "0"})
    for order, value in (("tensorflow-first", "false"), ("operation-first", None)):
        commands["allocator", order, value] = (["-c", _ALLOCATOR.replace("sys.argv[1]", repr(order))],
                                               {**_UNSET, onednn.VARIABLE: "0", onednn.ALLOCATOR_VARIABLE: value})
    # At most four at once: on two cores as fast as all eight at once, with less memory (~0.9 GB a process).
    pending, running, results = list(commands.items()), {}, {}
    while pending or running:
        while pending and len(running) < 4:
            key, (arguments, env_changes) = pending.pop(0)
            running[key] = _start(arguments, env_changes)
        key = next(iter(running))  # the oldest
        results[key] = _finish(running.pop(key))
    results["allocator", "tensorflow-first", None] = results["compile twice"]
    return results


def _step_record(programs, name, setting):
    """(JSON record, thread pools read back) of one run of benchmarks/step.py."""
    rc, stdout, stderr = programs["step", name, setting]
    assert rc == 0, f"{name}, TF_ENABLE_ONEDNN_OPTS={setting}: rc {rc}\n{stderr[-2000:]}"
    *_, line, threads = stdout.strip().splitlines()
    return json.loads(line), threads


@pytest.mark.slow
def test_importing_byol_keras_first_turns_onednn_on_and_the_users_choice_wins(programs):
    states = {}
    for order, key, line in (("byol_keras-first", "state", -1), ("tensorflow-first", "compile twice", -2)):
        rc, stdout, stderr = programs[key]
        assert rc == 0, (order, stderr[-2000:])
        states[order] = json.loads(stdout.strip().splitlines()[line])
    assert states["byol_keras-first"] == {"enabled": True, onednn.VARIABLE: "1", "set_by": "byol_keras"}
    # The user's 0 or 1 wins (the step benchmark imports byol_keras first): all four runs record it.
    for name in _CRASHED:
        for setting in ("0", "1"):
            record, _ = _step_record(programs, name, setting)
            assert record["onednn"] == {"enabled": setting == "1", onednn.VARIABLE: setting, "set_by": "user"}, (
                name, setting)
    # Too late to set: TensorFlow's own default decided (in the "compile twice" process, off, as on an AVX2 CPU).
    assert states["tensorflow-first"] == {"enabled": False, onednn.VARIABLE: None, "set_by": "tensorflow default"}


@pytest.mark.slow
def test_a_library_user_with_onednn_off_is_told_once(programs):
    rc, stdout, stderr = programs["compile twice"]
    assert rc == 0, stderr[-2000:]
    told = [line for line in stderr.splitlines() if "oneDNN kernels are off" in line]
    assert len(told) == 1, stderr[-3000:]
    assert "TF_ENABLE_ONEDNN_OPTS=1" in told[0] and "before keras and tensorflow" in told[0]
    assert f"{onednn.MEASURED_SPEEDUP:.1f}x faster" in told[0]


def test_no_line_when_the_variable_is_set_onednn_is_on_or_a_gpu_runs_the_step(monkeypatch, caplog):
    # The other half, in this process (whose variable conftest's import of byol_keras set, or the user did).
    monkeypatch.setattr(onednn, "_tell", onednn._tell.__wrapped__)  # no once-per-process memory here
    off_by_default = dict(_enabled=lambda: False, _x86=lambda: True, _gpus=lambda: False)
    for name, value in off_by_default.items():
        monkeypatch.setattr(onednn, name, value)
    with caplog.at_level(logging.WARNING, logger="byol_keras.onednn"):
        assert onednn.tell_if_off({}) is not None  # the condition itself: off, unset, x86, no GPU
        assert onednn.tell_if_off({onednn.VARIABLE: "0"}) is None  # the user chose
        monkeypatch.setattr(onednn, "_enabled", lambda: True)
        assert onednn.tell_if_off({}) is None  # on
        monkeypatch.setattr(onednn, "_enabled", lambda: False)
        monkeypatch.setattr(onednn, "_gpus", lambda: True)
        assert onednn.tell_if_off({}) is None  # the step runs on a GPU
        monkeypatch.setattr(onednn, "_gpus", lambda: False)
        monkeypatch.setattr(onednn, "_x86", lambda: False)
        assert onednn.tell_if_off({}) is None  # not x86: TensorFlow's own oneDNN policy (ARM)
    assert len([r for r in caplog.records if "oneDNN kernels are off" in r.getMessage()]) == 1


# ----------------------------------------------------------------------------------------------------------
# The crash: oneDNN's jit_1x1 backward-weights kernel and a strided 1×1 convolution with few input channels
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_step_benchmark_runs_where_it_crashed_with_onednn_on_and_off_and_pins_the_thread_pools(programs):
    # benchmarks/step.py end to end on a tiny network: one JSON line with a positive rate, the thread
    # settings read back, oneDNN on or off as asked (the four runs of the `programs` fixture).
    for name, (flags, _) in _CRASHED.items():
        for setting in ("0", "1"):
            record, threads = _step_record(programs, name, setting)
            assert record["median"] > 0 and record["onednn"]["enabled"] is (setting == "1"), record["onednn"]
            pools = [flags[flags.index("--threads") + 1], flags[flags.index("--inter-threads") + 1]]
            assert threads.split() == pools
            assert [record["config"]["threads"], record["config"]["inter_threads"]] == [int(n) for n in pools]


@pytest.mark.parametrize("size, strides, padding", [(8, 2, "same"), (7, 2, "same"), (7, 2, "valid"), (9, 3, "same")])
def test_a_strided_1x1_conv_subsamples_first_with_the_same_outputs_and_gradients(size, strides, padding):
    x = tf.constant(np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32"))
    reference = keras.layers.Conv2D(5, 1, strides=strides, padding=padding, use_bias=True)
    layer = layers.Conv2D(5, 1, strides=strides, padding=padding, use_bias=True)
    reference.build(x.shape)
    layer.build(x.shape)
    layer.set_weights([w + 0.1 for w in reference.get_weights()])
    reference.set_weights(layer.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, theirs = layer(x), reference(x)
        ours_loss, theirs_loss = tf.reduce_sum(tf.sin(ours)), tf.reduce_sum(tf.sin(theirs))
    assert ours.shape == theirs.shape == (2, -(-size // strides), -(-size // strides), 5)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    # Output pixel i reads input pixel strides·i: the kernel applied to the subsampled input, by hand.
    kernel, bias = (w.numpy() for w in layer.weights)
    by_hand = np.einsum("nhwc,cd->nhwd", x.numpy()[:, ::strides, ::strides], kernel[0, 0]) + bias
    np.testing.assert_allclose(ours, by_hand, rtol=1e-5, atol=1e-5)
    for ours_grad, theirs_grad in zip(tape.gradient(ours_loss, [x, *layer.weights]),
                                      tape.gradient(theirs_loss, [x, *reference.weights])):
        np.testing.assert_allclose(ours_grad, theirs_grad, rtol=1e-5, atol=1e-5)


def test_our_conv2d_is_keras_conv2d_by_config_and_elsewhere():
    layer = layers.Conv2D(4, 1, strides=2, padding="same", name="proj")
    # The same configuration as Keras' Conv2D: either class builds from the other's config.
    assert keras.layers.Conv2D.from_config(layer.get_config()).get_config() == layer.get_config()
    assert layers.Conv2D.from_config(layer.get_config()).get_config() == layer.get_config()
    # Any other convolution is Keras' own computation (here a strided 3×3 one).
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 3)).astype("float32")
    ours, theirs = layers.Conv2D(4, 3, strides=2), keras.layers.Conv2D(4, 3, strides=2)
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    np.testing.assert_array_equal(ours(x), theirs(x))


def test_resnet18_shortcuts_skip_the_strided_1x1_kernel_and_old_weights_load(tmp_path):
    encoder = resnet18(width=4, input_shape=(16, 16, 3))
    shortcuts = [layer for layer in encoder.layers if layer.name.endswith("_proj_conv")]
    assert [layer.name for layer in shortcuts] == [f"stage{s}_block1_proj_conv" for s in (2, 3, 4)]
    assert all(type(layer) is layers.Conv2D and layer.strides == (2, 2) for layer in shortcuts)
    # The network before this layer existed (plain strided Conv2D shortcuts): same variables, same names, and
    # weights saved by either load into the other with the same outputs.
    old = keras.models.clone_model(encoder, clone_function=lambda layer: (
        keras.layers.Conv2D.from_config(layer.get_config()) if isinstance(layer, layers.Conv2D)
        else layer.__class__.from_config(layer.get_config())))
    assert [v.path for v in old.weights] == [v.path for v in encoder.weights]
    old.set_weights([np.random.default_rng(i).normal(size=w.shape).astype("float32") * 0.3
                     for i, w in enumerate(old.get_weights())])
    old.save_weights(tmp_path / "old.weights.h5")
    encoder.load_weights(tmp_path / "old.weights.h5")
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(encoder(x, training=False), old(x, training=False), rtol=1e-4, atol=1e-5)
    encoder.save_weights(tmp_path / "new.weights.h5")
    old.load_weights(tmp_path / "new.weights.h5")  # and the other way
    np.testing.assert_allclose(old(x, training=False), encoder(x, training=False), rtol=1e-4, atol=1e-5)
    encoder.save(tmp_path / "encoder.keras")
    loaded = keras.saving.load_model(tmp_path / "encoder.keras")
    assert type(loaded.get_layer("stage2_block1_proj_conv")) is layers.Conv2D
    np.testing.assert_allclose(loaded(x, training=False), old(x, training=False), rtol=1e-4, atol=1e-5)


def test_use_bfc_allocator_sets_the_variable_unless_someone_chose_or_tensorflow_runs():
    env = {}
    assert onednn.use_bfc_allocator(env, runtime_started=False) == "set"
    limit = int(env.pop(onednn.ALLOCATOR_LIMIT_VARIABLE))  # the machine's memory, at least TensorFlow's 64 GiB
    assert limit == max(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20, 65536)
    assert env == {onednn.ALLOCATOR_VARIABLE: "true", onednn.SET_ALLOCATOR_BY_BYOL_KERAS: "true"}
    env = {onednn.ALLOCATOR_LIMIT_VARIABLE: "1024"}  # a cap the user set stays
    assert onednn.use_bfc_allocator(env, runtime_started=False) == "set" and env[onednn.ALLOCATOR_LIMIT_VARIABLE] == "1024"
    for value in ("true", "false"):  # the user's choice wins, either way
        env = {onednn.ALLOCATOR_VARIABLE: value}
        assert onednn.use_bfc_allocator(env, runtime_started=False) == "user" and env == {onednn.ALLOCATOR_VARIABLE: value}
    env = {}
    assert onednn.use_bfc_allocator(env, runtime_started=True) == "too late" and env == {}


@pytest.mark.slow
def test_the_cpu_allocator_pools_with_onednn_off_unless_the_user_chose_or_it_was_too_late(programs):
    states = {}
    for key in [key for key in programs if key[0] == "allocator"]:
        rc, stdout, stderr = programs[key]
        assert rc == 0, (key, stderr[-2000:])
        states[key[1:]] = json.loads(stdout.strip().splitlines()[-1])
    variable = onednn.ALLOCATOR_VARIABLE
    # TensorFlow imported before byol_keras but no operation run: still in time, TensorFlow's allocator pools.
    assert states["tensorflow-first", None] == {"pooling": True, variable: "true", "set_by": "byol_keras"}
    # The user's choice wins: malloc, as TensorFlow has it with oneDNN off.
    assert states["tensorflow-first", "false"] == {"pooling": False, variable: "false", "set_by": "user"}
    # An operation before byol_keras: the devices exist, the variable is left unset, and the record says malloc.
    assert states["operation-first", None] == {"pooling": False, variable: None, "set_by": "tensorflow default"}
    # In this process (byol_keras imported by conftest before TensorFlow started): pooling either way.
    assert onednn.allocator_state()["pooling"] is True
