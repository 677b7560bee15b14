"""byol_keras.distribute: strategies, batch split, precision, XLA, and BYOL under Mirrored/MultiWorkerMirrored
(chief-only writing: test_cluster.py; step backups: test_fault_tolerance.py; synchronised BN: test_layers.py).

Anything that needs several devices or processes runs `tests/distributed_worker.py` in a subprocess
(TensorFlow's devices are fixed once it starts), with hard timeouts; the rest runs in this process.
"""

import json
import os
import subprocess
import sys
import signal
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras import distribute
from byol_keras.onednn import onednn_state
from byol_keras.distribute import (
    PRECISIONS,
    make_strategy,
    per_replica_batch_size,
    resolve_jit_compile,
    set_precision,
)

import distributed_worker  # tests/ is on sys.path under pytest

# The datasets here are generated, not shuffled: Keras' note that `shuffle=True` is ignored is noise.
pytestmark = pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning")


from helpers import (  # noqa: E402  shared with test_fault_tolerance.py
    fake_strategy,
    worker_args,
    small_byol,
    numpy_weights,
    run_worker,
    parse_result,
    read_steps,
    free_port,
    WORKER,
    ROOT,
    TIMEOUT,
)


@pytest.fixture
def float32_policy():
    yield
    keras.config.set_dtype_policy("float32")


# ------------------------------------------------------------------------------------------------------
# strategies, batch split, chief
# ------------------------------------------------------------------------------------------------------


def test_make_strategy_on_this_cpu_machine():
    auto = make_strategy("auto")
    # No GPU here: "auto" is the default strategy, one replica.
    assert auto is tf.distribute.get_strategy() and auto.num_replicas_in_sync == 1
    one = make_strategy("one-device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy) and one.num_replicas_in_sync == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="gpu"), "name='gpu'"),
        (dict(name="Mirrored"), "name='Mirrored'"),
        (dict(name="auto", tpu="grpc://10.0.0.2:8470"), "tpu='grpc://10.0.0.2:8470'"),
        (dict(name="auto", devices=["/cpu:0"]), r"devices=\['/cpu:0'\]"),
    ],
)
def test_make_strategy_errors_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_strategy(**kwargs)


def test_multi_worker_rejects_malformed_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"task": {"type": "worker", "index": 0}}))
    with pytest.raises(ValueError, match="cluster"):
        make_strategy("multi-worker")


def test_per_replica_batch_size_splits_or_names_both_numbers():
    assert per_replica_batch_size(4096, fake_strategy(512)) == 8
    assert per_replica_batch_size(256, fake_strategy(1)) == 256
    assert per_replica_batch_size(np.int64(24), fake_strategy(8)) == 3
    with pytest.raises(ValueError, match=r"global_batch=100 does not split evenly over 3 replicas"):
        per_replica_batch_size(100, fake_strategy(3))
    with pytest.raises(ValueError, match=r"global_batch=2 does not split evenly over 4 replicas"):
        per_replica_batch_size(2, fake_strategy(4))
    for bad in (0, -8, 2.5, True, "64"):
        with pytest.raises(ValueError, match=r"global_batch="):
            per_replica_batch_size(bad, fake_strategy(1))


# ------------------------------------------------------------------------------------------------------
# precision and XLA
# ------------------------------------------------------------------------------------------------------


def test_set_precision_validates_and_sets_the_global_policy(float32_policy):
    for name in PRECISIONS:
        assert set_precision(name).name == name
        assert keras.config.dtype_policy().name == name
    with pytest.raises(ValueError, match="precision='float16'"):
        set_precision("float16")


def test_resolve_jit_compile(monkeypatch):
    one = tf.distribute.get_strategy()
    monkeypatch.setattr(distribute, "_cpu_only", lambda: False)
    assert resolve_jit_compile(one) == (True, "XLA is on (one replica)")
    assert resolve_jit_compile(one, requested=False)[0] is False
    jit, reason = resolve_jit_compile(fake_strategy(2), requested=True)
    assert jit is False and "more than one replica" in reason
    with pytest.raises(ValueError, match="requested='yes'"):
        resolve_jit_compile(fake_strategy(1), requested="yes")
    # A CPU-only host with TensorFlow's oneDNN kernels on: they measured faster, so "auto" is off; asked
    # for, XLA stays on; views made inside the step keep XLA (it fuses their colour maths).
    monkeypatch.setattr(distribute, "_cpu_only", lambda: True)
    monkeypatch.setattr(distribute, "_onednn_enabled", lambda: True)
    jit, reason = resolve_jit_compile(one)
    assert jit is False and "oneDNN kernels (on in this process)" in reason
    assert resolve_jit_compile(one, requested=True) == (True, "XLA is on (one replica)")
    assert resolve_jit_compile(one, augment_on_device=True)[0] is True
    # With them off (an AVX2 CPU's default, or TF_ENABLE_ONEDNN_OPTS=0) XLA beat the Eigen kernels: on.
    monkeypatch.setattr(distribute, "_onednn_enabled", lambda: False)
    jit, reason = resolve_jit_compile(one)
    assert jit is True and "oneDNN kernels are off in this process" in reason
    assert resolve_jit_compile(one, requested=False)[0] is False
    # The state read by default is TensorFlow's own (this process: oneDNN as conftest or the user left it).
    monkeypatch.undo()
    assert distribute._onednn_enabled() is onednn_state()["enabled"]


@pytest.mark.slow
def test_mixed_bfloat16_and_float16_train(float32_policy):
    args = worker_args(epochs=1, steps_per_epoch=2)
    for name in ("mixed_bfloat16", "mixed_float16"):
        set_precision(name)
        model = small_byol(args)
        assert model.encoder.layers[1].compute_dtype == name.split("_")[1]
        assert all(v.dtype == "float32" for v in model.weights if v.dtype.startswith("float"))
        history = model.fit(distributed_worker.dataset(0, 2, 8, 8, 3), epochs=1, steps_per_epoch=2, verbose=0)
        assert np.isfinite(history.history["loss"][0]) and 0.0 <= history.history["loss"][0] <= 8.0
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (name == "mixed_float16")
        assert int(model.optimizer.iterations) == 2


def test_float16_overflow_skips_the_step_and_the_ema(float32_policy):
    set_precision("mixed_float16")
    args = worker_args(epochs=1, steps_per_epoch=2)
    model, _ = distributed_worker.build_model(args, synchronized=False)
    # A loss scale of 2^100 makes every float16 gradient overflow: the loss-scale optimizer must skip
    # the update (its step counter stays), and BYOL must then leave the target where it was.
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=2.0**100)
    model.compile(optimizer=optimizer, jit_compile=False)
    online = numpy_weights(model.trainable_variables)
    target = numpy_weights([t for t, _ in model._ema_pairs])
    history = model.fit(distributed_worker.dataset(0, 2, 8, 8, 3), epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])  # the loss itself is fine; its scaled gradients are not
    assert int(model.optimizer.iterations) == 0
    assert float(model.optimizer.dynamic_scale) == 2.0**98  # halved at each skipped step
    for before, after in zip(target + online, numpy_weights([t for t, _ in model._ema_pairs] + model.trainable_variables)):
        np.testing.assert_array_equal(before, after)


# ------------------------------------------------------------------------------------------------------
# Several devices and processes (subprocesses)
# ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mirrored_two_cpus_equals_default_strategy_with_sync_bn(tmp_path):
    out = str(tmp_path / "compare.json")
    code, log, _ = run_worker("compare-mirrored", "--out", out, "--encoder", "small", "--epochs", "1",
                              "--steps-per-epoch", "4")
    assert code == 0, log[-4000:]
    with open(out) as f:
        result = json.load(f)
    default, mirrored = result["default"], result["mirrored"]
    assert default["replicas"] == 1 and mirrored["replicas"] == 2
    assert default["step"] == mirrored["step"] == 4
    # Same global batch of 8 (4 per replica), BN statistics over all 8: the same computation up to
    # float32 summation order. Tolerance 1e-5 on losses ~3 and on weights after 4 SGD steps.
    np.testing.assert_allclose(mirrored["losses"], default["losses"], rtol=1e-5)
    for name in ("online", "target"):
        for a, b in zip(default[name], mirrored[name]):
            np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-5)
    # The EMA ran once per global step and left the target identical, bit for bit, on both replicas.
    assert mirrored["target_copies"] == 2 and mirrored["target_replicas_identical"]
    # The reason resolve_jit_compile gives for turning XLA off under several replicas still holds.
    assert result["xla_mirrored_error"] is not None
    assert "located in device" in result["xla_mirrored_error"], result["xla_mirrored_error"][:500]


def _start_two_workers(run_dir, *flags):
    """Two `distributed_worker.py train` processes of one MultiWorkerMirroredStrategy cluster on this machine."""
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, WORKER, "train", "--run-dir", run_dir, "--strategy", "multi-worker", "--encoder", "small",
             "--global-batch", "8", *flags],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    return procs


@pytest.mark.slow
def test_multi_worker_two_processes(tmp_path):
    run_dir = str(tmp_path / "run")
    procs = _start_two_workers(run_dir, "--epochs", "1", "--steps-per-epoch", "4", "--backup-every", "2", "--jit")
    outputs, deadline = [], time.monotonic() + TIMEOUT
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]
    chief, other = (parse_result(out) for out in outputs)
    assert chief["chief"] and not other["chief"] and chief["replicas"] == other["replicas"] == 2
    assert chief["step"] == other["step"] == 4
    assert chief["digest"] == other["digest"], "both workers must end with identical weights"
    assert chief["jit_compile"] is False and "more than one replica" in chief["jit_reason"]
    # Only the chief's run directory holds the backup, the TensorBoard logs, the step log and the export.
    assert sorted(os.listdir(run_dir)) == ["backup", "encoder.keras", "logs", "steps.jsonl"]
    assert sorted(os.listdir(os.path.join(run_dir, "backup"))) == ["step-000000002", "step-000000004"]
    assert os.listdir(os.path.join(run_dir, "logs"))
    assert other["out_dir"] != run_dir and not os.path.exists(other["out_dir"])
    steps = read_steps(run_dir)
    assert [r["step"] for r in steps] == [0, 1, 2, 3]
    assert all(np.isfinite(r["step_loss"]) for r in steps)


@pytest.mark.slow
def test_multi_worker_a_sigterm_to_one_worker_stops_both_at_the_same_step_with_a_backup(tmp_path):
    """A cluster stops one machine (a preempted worker): both workers stop after the same step, the chief writes its
    backup, and both exit as signalled (143)."""
    run_dir = str(tmp_path / "run")
    procs = _start_two_workers(run_dir, "--epochs", "1", "--steps-per-epoch", "20", "--backup-every", "100",
                               "--sleep", "1", "--sleep-from", "2")
    deadline = time.monotonic() + TIMEOUT
    try:
        while not os.path.exists(os.path.join(run_dir, "steps.jsonl")) or len(read_steps(run_dir)) < 2:
            assert all(proc.poll() is None for proc in procs)
            assert time.monotonic() < deadline, "the workers did not reach step 2 in time"
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGTERM)  # the other worker, not the chief
        outputs = [proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [proc.returncode for proc in procs] == [143, 143], [out[-3000:] for out in outputs]
    chief, other = (parse_result(out) for out in outputs)
    assert chief["chief"] and not other["chief"]
    assert chief["step"] == other["step"] < 20
    assert chief["backup"] == os.path.join(run_dir, "backup", f"step-{chief['step']:09d}")
    assert os.listdir(os.path.join(run_dir, "backup")) == [f"step-{chief['step']:09d}"]
