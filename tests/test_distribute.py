"""byol_keras.distribute: strategies, batch split, chief-only writing, synchronised BN, precision, XLA,
step backups (kill and resume), the non-finite-loss stop, and BYOL under Mirrored/MultiWorkerMirrored.

Anything that needs several devices or processes runs `tests/distributed_worker.py` in a subprocess
(TensorFlow's devices are fixed once it starts), with hard timeouts; the rest runs in this process.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras import distribute
from byol_keras.distribute import (
    PRECISIONS,
    StepBackup,
    StopOnNonFiniteLoss,
    is_chief,
    make_strategy,
    per_replica_batch_size,
    resolve_jit_compile,
    set_precision,
    sync_batchnorm,
    worker_dir,
)
from byol_keras.encoders import resnet18
from byol_keras.schedules import target_tau, warmup_cosine

import distributed_worker  # tests/ is on sys.path under pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_worker.py")
ROOT = os.path.dirname(os.path.dirname(WORKER))
# The datasets here are generated, not shuffled: Keras' note that `shuffle=True` is ignored is noise.
pytestmark = pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning")
# A subprocess that has not finished by then is killed and the test fails: nothing may hang CI.
TIMEOUT = 420


# ------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------


def fake_strategy(replicas=1, task_type=None, task_id=None, cluster=None):
    """An object with what the functions read from a strategy: replicas and a real cluster resolver."""
    resolver = None
    if task_type is not None:
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
        )
    return types.SimpleNamespace(num_replicas_in_sync=replicas, cluster_resolver=resolver)


def worker_args(**overrides):
    args = dict(epochs=2, steps_per_epoch=3, global_batch=8, size=8, width=4, seed=3, encoder="small")
    args.update(overrides)
    return types.SimpleNamespace(**args)


def small_byol(args):
    model, optimizer = distributed_worker.build_model(args, synchronized=False)
    model.compile(optimizer=optimizer, jit_compile=False)
    return model


def numpy_weights(variables):
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]


def run_worker(command, *args, env=None, timeout=TIMEOUT):
    """Run the worker to completion; return (returncode, output, parsed RESULT or None)."""
    proc = subprocess.run(
        [sys.executable, WORKER, command, *map(str, args)],
        cwd=ROOT, env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr, parse_result(proc.stdout)


def parse_result(stdout):
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return None


def read_steps(run_dir):
    with open(os.path.join(run_dir, "steps.jsonl")) as f:
        return [json.loads(line) for line in f]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def test_is_chief_follows_tf_config_conventions():
    workers = {"worker": ["a:1", "b:2", "c:3"]}
    with_chief = {"chief": ["z:0"], "worker": ["a:1", "b:2"]}
    assert is_chief(fake_strategy())  # not in a cluster
    assert is_chief(fake_strategy(task_type="worker", task_id=0, cluster=workers))
    assert not is_chief(fake_strategy(task_type="worker", task_id=2, cluster=workers))
    assert is_chief(fake_strategy(task_type="chief", task_id=0, cluster=with_chief))
    # With a chief task, worker 0 is an ordinary worker.
    assert not is_chief(fake_strategy(task_type="worker", task_id=0, cluster=with_chief))


def test_worker_dir_chief_keeps_others_write_to_removed_temp(tmp_path):
    run_dir = str(tmp_path / "run")
    with worker_dir(run_dir, fake_strategy()) as out:
        assert out == run_dir and os.path.isdir(run_dir)
    other = fake_strategy(task_type="worker", task_id=1, cluster={"worker": ["a:1", "b:2"]})
    with worker_dir(run_dir, other) as out:
        assert out != run_dir and os.path.isdir(out) and "worker-1" in os.path.basename(out)
        with open(os.path.join(out, "x.txt"), "w") as f:
            f.write("scratch")
    assert not os.path.exists(out)
    # Removed also when training fails inside the block.
    with pytest.raises(RuntimeError):
        with worker_dir(run_dir, other) as out:
            raise RuntimeError("worker died")
    assert not os.path.exists(out)
    assert os.listdir(run_dir) == []  # the non-chief never wrote to the run directory


# ------------------------------------------------------------------------------------------------------
# synchronised BatchNorm
# ------------------------------------------------------------------------------------------------------


def batchnorms(model):
    return [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]


def test_sync_batchnorm_resnet18_keeps_weights_and_outputs():
    encoder = resnet18(width=2, input_shape=(8, 8, 3))
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    # Non-trivial moving statistics, so that inference mode checks they were copied.
    encoder(x, training=True)
    synced = sync_batchnorm(encoder)
    assert synced is not encoder
    assert len(batchnorms(synced)) == len(batchnorms(encoder)) == 20
    assert all(l.synchronized for l in batchnorms(synced))
    assert not any(l.synchronized for l in batchnorms(encoder)), "the original must stay untouched"
    for a, b in zip(encoder.weights, synced.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    # On one replica a synchronised BN is an ordinary BN: same outputs in both modes (to float rounding:
    # resnet18's FusedBatchNormalization uses TensorFlow's fused kernel, the synchronised one Keras' ops).
    np.testing.assert_allclose(np.array(synced(x, training=False)), np.array(encoder(x, training=False)), atol=1e-5)
    # In training mode the synchronised BN computes the variance as E[x²] − E[x]² (one pass, so that it can
    # all-reduce both sums) instead of two passes: float32 rounding differs by ~3e-5 after 20 BN layers.
    np.testing.assert_allclose(np.array(synced(x, training=True)), np.array(encoder(x, training=True)),
                               rtol=1e-4, atol=1e-4)
    # The BYOL target is rebuilt from the config: it must carry the flag too.
    norms = [l for l in synced.get_config()["layers"] if l["class_name"].endswith("BatchNormalization")]
    assert len(norms) == 20 and all(l["config"].get("synchronized") for l in norms)


def test_sync_batchnorm_keras_applications_nested_and_subclassed():
    app = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg",
        include_preprocessing=False, minimalistic=True,
    )
    inputs = keras.Input((32, 32, 3))
    head = keras.Sequential([keras.Input((app.output_shape[-1],)), keras.layers.BatchNormalization()], name="head")
    wrapped = keras.Model(inputs, head(app(inputs)), name="wrapped")  # nested functional + Sequential
    synced = sync_batchnorm(wrapped)
    assert len(batchnorms(synced)) == len(batchnorms(wrapped)) > 10
    assert all(l.synchronized for l in batchnorms(synced))
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.array(synced(x)), np.array(wrapped(x)), atol=1e-5)

    class Tiny(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(3, 3)
            self.bn = keras.layers.BatchNormalization()
            self.pool = keras.layers.GlobalAveragePooling2D()

        def call(self, x, training=False):
            return self.pool(self.bn(self.conv(x), training=training))

    tiny = Tiny()
    tiny(x)
    assert sync_batchnorm(tiny) is tiny and tiny.bn.synchronized  # switched in place

    with pytest.raises(TypeError, match="encoder=.*Dense"):
        sync_batchnorm(keras.layers.Dense(3))


# ------------------------------------------------------------------------------------------------------
# precision and XLA
# ------------------------------------------------------------------------------------------------------


def test_set_precision_validates_and_sets_the_global_policy(float32_policy):
    for name in PRECISIONS:
        assert set_precision(name).name == name
        assert keras.config.dtype_policy().name == name
    with pytest.raises(ValueError, match="precision='float16'"):
        set_precision("float16")


def test_resolve_jit_compile(monkeypatch, tmp_path):
    one = tf.distribute.get_strategy()
    monkeypatch.setattr(distribute, "_cpu_only", lambda: False)
    assert resolve_jit_compile(one) == (True, "XLA is on (one replica)")
    assert resolve_jit_compile(one, requested=False)[0] is False
    jit, reason = resolve_jit_compile(fake_strategy(2), requested=True)
    assert jit is False and "more than one replica" in reason
    with pytest.raises(ValueError, match="requested='yes'"):
        resolve_jit_compile(fake_strategy(1), requested="yes")
    # A CPU-only host (AVX-512 or AVX2): oneDNN measured faster, so "auto" is off; asked for, XLA stays on;
    # views made inside the step keep XLA (it fuses their colour maths).
    monkeypatch.setattr(distribute, "_cpu_only", lambda: True)
    jit, reason = resolve_jit_compile(one)
    assert jit is False and "oneDNN" in reason
    assert resolve_jit_compile(one, requested=True) == (True, "XLA is on (one replica)")
    assert resolve_jit_compile(one, augment_on_device=True)[0] is True
    # The flags come from /proc/cpuinfo's first "flags" line; no file, no flags.
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f\n\nflags\t: other\n")
    assert distribute.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx2", "fma", "avx512f"}
    assert distribute.cpu_flags(str(tmp_path / "missing")) == set()


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


def test_step_backup_restores_mid_epoch_exactly(tmp_path):
    args = worker_args(epochs=2, steps_per_epoch=3)
    total = args.epochs * args.steps_per_epoch
    backup_dir = str(tmp_path / "backup")

    reference = small_byol(args)
    ref = Record()
    reference.fit(distributed_worker.dataset(0, total, 8, 8, 3), epochs=2, steps_per_epoch=3, callbacks=[ref], verbose=0)

    crashed = small_byol(args)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(distributed_worker.dataset(0, total, 8, 8, 3), epochs=2, steps_per_epoch=3,
                    callbacks=[StepBackup(backup_dir, 2), CrashAtStep(5)], verbose=0)
    # Backups at global steps 2 and 4; only the newest is kept. Step 4 = epoch 1 (0-based), 1 batch done.
    assert sorted(os.listdir(backup_dir)) == ["step-000000004"]
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
    with caplog.at_level("ERROR", logger="byol_keras.distribute"):
        model.fit(data, epochs=2, steps_per_epoch=4, callbacks=[StepBackup(backup_dir, 2), stopper], verbose=0)
    assert stopper.stopped_at_step == 5
    assert "Non-finite loss (nan) at global step 5 (epoch 2, batch 2)" in stopper.message
    assert stopper.message in caplog.text
    assert int(model.optimizer.iterations) == 6, "training stopped right after the bad step"
    assert isinstance(stopper, keras.callbacks.TerminateOnNaN)  # Keras' own, extended
    assert sorted(os.listdir(backup_dir)) == ["step-000000004"]

    fresh = small_byol(args)
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(os.path.join(backup_dir, "step-000000004", "model.weights.h5"))
    assert int(fresh.optimizer.iterations) == 4
    assert all(np.isfinite(w).all() for w in numpy_weights(fresh.weights))

    # Order reversed: the stopper first.
    model = small_byol(args)
    backup_dir2 = str(tmp_path / "backup2")
    model.fit(data, epochs=2, steps_per_epoch=4, callbacks=[StopOnNonFiniteLoss(), StepBackup(backup_dir2, 2)], verbose=0)
    assert sorted(os.listdir(backup_dir2)) == ["step-000000004"]


def test_step_backup_arguments_are_validated():
    with pytest.raises(ValueError, match="save_every_steps=0"):
        StepBackup("/tmp/x", 0)
    with pytest.raises(ValueError, match="save_every_steps=2.5"):
        StepBackup("/tmp/x", 2.5)
    with pytest.raises(ValueError, match="backup_dir=''"):
        StepBackup("", 10)
    assert StepBackup("/nonexistent/byol/backup", 10).latest_state() is None


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


@pytest.mark.slow
def test_multi_worker_two_processes(tmp_path):
    run_dir = str(tmp_path / "run")
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, WORKER, "train", "--run-dir", run_dir, "--strategy", "multi-worker", "--encoder",
             "small", "--epochs", "1", "--steps-per-epoch", "4", "--backup-every", "2", "--global-batch", "8",
             "--jit"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
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
    assert os.listdir(os.path.join(run_dir, "backup")) == ["step-000000004"]
    assert os.listdir(os.path.join(run_dir, "logs"))
    assert other["out_dir"] != run_dir and not os.path.exists(other["out_dir"])
    steps = read_steps(run_dir)
    assert [r["step"] for r in steps] == [0, 1, 2, 3]
    assert all(np.isfinite(r["step_loss"]) for r in steps)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_the_same_command_resumes(tmp_path):
    common = ["--encoder", "small", "--epochs", "2", "--steps-per-epoch", "5", "--backup-every", "3"]
    reference_dir, run_dir = str(tmp_path / "reference"), str(tmp_path / "run")
    # The uninterrupted reference runs alongside (the killed run mostly sleeps between its steps).
    # Output goes to files: a pipe nobody reads while we poll could fill up and stall a process.
    reference_log, killed_log = open(tmp_path / "reference.log", "w+"), open(tmp_path / "killed.log", "w+")
    reference_proc = subprocess.Popen([sys.executable, WORKER, "train", "--run-dir", reference_dir, *common],
                                      cwd=ROOT, stdout=reference_log, stderr=subprocess.STDOUT, text=True)
    # The same command, killed with SIGKILL once the backup of global step 6 (epoch 2, batch 1) exists.
    command = [sys.executable, WORKER, "train", "--run-dir", run_dir, *common]
    proc = subprocess.Popen(command + ["--sleep", "1.0"], cwd=ROOT, stdout=killed_log,
                            stderr=subprocess.STDOUT, text=True)
    backup = os.path.join(run_dir, "backup", "step-000000006")
    deadline = time.monotonic() + TIMEOUT
    try:
        while not os.path.isdir(backup):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no backup appeared in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        reference_proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in (proc, reference_proc):
            if p.poll() is None:
                p.kill()
        reference_log.close(), killed_log.close()
    reference_out = (tmp_path / "reference.log").read_text()
    assert reference_proc.returncode == 0, reference_out[-4000:]
    reference = parse_result(reference_out)
    assert proc.returncode == -signal.SIGKILL
    killed_steps = read_steps(run_dir)
    assert 6 <= len(killed_steps) < 10, "killed mid-epoch, after the step-6 backup"

    code, log, resumed = run_worker("train", "--run-dir", run_dir, *common)
    assert code == 0, log[-4000:]
    assert resumed["restored_step"] == 6 and resumed["step"] == 10
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
