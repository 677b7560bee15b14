"""A tiny BYOL training run for the distribution tests, run as a subprocess by tests/test_distribute.py.

It uses the library pieces that `training/pretrain.py` uses (make_strategy, sync_batchnorm, set_precision,
resolve_jit_compile, worker_dir, StepBackup, StopOnNonFiniteLoss) on a tiny ResNet-18 and generated data.
The data are a deterministic function of the global step (stateless random ops seeded by the step), so a
resumed run sees exactly the batches an uninterrupted one would.

    python tests/distributed_worker.py train --run-dir /tmp/run --strategy default --epochs 2 --steps-per-epoch 5
    python tests/distributed_worker.py compare-mirrored --out /tmp/result.json

`train` prints one line `RESULT {json}` at the end (the weights' digest, the final step, this process's
output directory); the chief also appends one JSON line per step to `<run-dir>/steps.jsonl`.
`compare-mirrored` splits the CPU into 2 logical devices and trains the same model with the default
strategy and with MirroredStrategy, then writes the losses and weights of both to `--out`.
"""

import argparse
import hashlib
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402  (importing Keras runs no TensorFlow op: the CPU can still be split)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from byol_keras.byol import BYOL  # noqa: E402
from byol_keras.cluster import is_chief, worker_dir  # noqa: E402
from byol_keras.distribute import make_strategy, per_replica_batch_size, resolve_jit_compile, set_precision  # noqa: E402
from byol_keras.encoders import resnet18  # noqa: E402
from byol_keras.fault_tolerance import StepBackup, StopOnNonFiniteLoss, StoppedBySignal  # noqa: E402
from byol_keras.layers import sync_batchnorm  # noqa: E402
from byol_keras.schedules import WarmupCosine  # noqa: E402


def split_cpu(n):
    """Split the CPU into `n` logical devices; must run before any TensorFlow op."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def batch_for_step(step, global_batch, size, seed, nan_at_step):
    """The two views of global step `step`: a fixed function of (seed, step), independent of history."""
    shape = (global_batch, size, size, 3)
    view1 = tf.random.stateless_normal(shape, seed=tf.stack([tf.cast(seed, tf.int64), step]))
    noise = tf.random.stateless_normal(shape, seed=tf.stack([tf.cast(seed + 1, tf.int64), step]))
    view2 = tf.reverse(view1, axis=[2]) + 0.3 * noise
    if nan_at_step is not None:
        view1 = tf.where(tf.equal(step, nan_at_step), view1 * np.float32("nan"), view1)
    return view1, view2


def dataset(start, total, global_batch, size, seed, nan_at_step=None):
    steps = tf.data.Dataset.range(start, total)
    return steps.map(lambda k: batch_for_step(k, global_batch, size, seed, nan_at_step))


class StepLossBYOL(BYOL):
    """BYOL that also logs each step's own loss (the logged `loss` is a running mean over the epoch)."""

    def _update_trackers(self, loss, z1, z2, batch_size):
        super()._update_trackers(loss, z1, z2, batch_size)
        self._step_loss = loss

    def train_step(self, data):
        logs = super().train_step(data)
        # Same shape as the other logs (length 1 under multi-worker, see byol._reducible_logs).
        logs["step_loss"] = keras.ops.reshape(self._step_loss, keras.ops.shape(logs["loss"]))
        return logs


def build_model(args, synchronized):
    keras.utils.set_random_seed(args.seed)
    if args.encoder == "resnet18":
        encoder = resnet18(width=args.width, input_shape=(args.size, args.size, 3))
    else:  # Two conv-BN-ReLU blocks: the same kinds of layers, a fraction of the tracing time.
        inputs = keras.Input((args.size, args.size, 3))
        x = inputs
        for i, filters in enumerate((args.width, 2 * args.width)):
            x = keras.layers.Conv2D(filters, 3, strides=i + 1, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
            x = keras.layers.ReLU()(x)
        encoder = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="small")
    if synchronized:
        encoder = sync_batchnorm(encoder)
    model = StepLossBYOL(
        encoder, projection_dim=8, projection_hidden_dim=16, prediction_hidden_dim=16,
        base_tau=0.9, synchronized_bn=synchronized,
    )
    total = args.epochs * args.steps_per_epoch
    schedule = WarmupCosine(0.05, warmup_steps=min(2, total - 1), total_steps=total)
    return model, keras.optimizers.SGD(schedule, momentum=0.9)


def numpy_weights(variables):
    return [np.asarray(keras.ops.convert_to_numpy(w)) for w in variables]


def weights_digest(model):
    values = numpy_weights(model.weights)
    digest = hashlib.sha256(b"".join(v.astype("float32").tobytes() for v in values)).hexdigest()
    return digest, [float(np.sum(v.astype("float64"))) for v in values]


def replicas_identical(variables):
    """Whether every replica holds the same value of each variable (MirroredVariable copies)."""
    for w in variables:
        copies = getattr(w.value, "values", None) or (w.value,)
        if not all(np.array_equal(copies[0].numpy(), c.numpy()) for c in copies):
            return False
    return True


class StepLog(keras.callbacks.Callback):
    """Appends one JSON line per step (global step, step loss, running loss, τ, learning rate)."""

    def __init__(self, path, chief):
        super().__init__()
        self.path, self.chief = path, chief

    def on_train_batch_begin(self, batch, logs=None):
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        record = {"step": self._step}
        record.update({k: float(logs[k]) for k in ("step_loss", "loss", "tau", "learning_rate")})
        if self.chief:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


class Sleep(keras.callbacks.Callback):
    """Waits after each step from global step `from_step` on (the step count after the update), so that a
    test can kill the process at a known point: after that step's backup and log line, before the next step."""

    def __init__(self, seconds, from_step=0):
        super().__init__()
        self.seconds, self.from_step = seconds, from_step

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) >= self.from_step:
            time.sleep(self.seconds)


def train(args):
    if args.logical_cpus > 1:
        split_cpu(args.logical_cpus)
    name = {"default": "auto"}.get(args.strategy, args.strategy)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")] if args.strategy == "mirrored" else None
    strategy = make_strategy(name, devices=devices)
    per_replica_batch_size(args.global_batch, strategy)
    set_precision(args.precision)
    chief = is_chief(strategy)
    total = args.epochs * args.steps_per_epoch
    backup = StepBackup(os.path.join(args.run_dir, "backup"), args.backup_every)
    state = backup.latest_state()
    start = state["step"] if state else 0
    synchronized = strategy.num_replicas_in_sync > 1
    with strategy.scope():
        model, optimizer = build_model(args, synchronized)
        jit, reason = resolve_jit_compile(strategy, "auto" if args.jit else False)
        model.compile(optimizer=optimizer, jit_compile=jit)
    stopper = StopOnNonFiniteLoss()
    with worker_dir(args.run_dir, strategy) as out_dir:
        callbacks = [
            backup,
            stopper,
            StepLog(os.path.join(out_dir, "steps.jsonl"), chief),
            keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), write_graph=False),
        ]
        if args.sleep:
            callbacks.append(Sleep(args.sleep, args.sleep_from))  # last: after the backup and the log line
        data = dataset(start, total, args.global_batch, args.size, args.seed, args.nan_at_step)
        try:
            model.fit(data, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, callbacks=callbacks, verbose=0)
        except StoppedBySignal as stop:  # SIGTERM/SIGINT: the step's backup is written; report, exit as signalled
            print("RESULT " + json.dumps({"chief": chief, "stopped_by_signal": int(stop.signum), "step": stop.step,
                                          "backup": stop.backup_path}), flush=True)
            sys.exit(stop.exit_code)
        if stopper.message is None:
            model.encoder.save(os.path.join(out_dir, "encoder.keras"))  # the run's export
        digest, sums = weights_digest(model)
        target = model.target_encoder.weights + model.target_projector.weights
        result = {
            "chief": chief,
            "out_dir": out_dir,
            "step": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
            "digest": digest,
            "sums": sums,
            "target_replicas_identical": replicas_identical(target),
            "replicas": strategy.num_replicas_in_sync,
            "jit_compile": jit,
            "jit_reason": reason,
            "stopped_at_step": stopper.stopped_at_step,
            "message": stopper.message,
            "restored_step": backup.restored_state["step"] if backup.restored_state else None,
            "dtype_policy": keras.config.dtype_policy().name,
        }
    print("RESULT " + json.dumps(result), flush=True)


def compare_mirrored(args):
    """Default strategy vs MirroredStrategy on 2 logical CPUs, same global batch, synchronised BN."""
    split_cpu(2)
    total = args.epochs * args.steps_per_epoch
    results = {}
    for name in ("default", "mirrored"):
        if name == "default":
            strategy = make_strategy("auto")
        else:
            strategy = make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
        with strategy.scope():
            # Synchronised BN on both sides: on one replica it is an ordinary BN.
            model, optimizer = build_model(args, synchronized=True)
            model.compile(optimizer=optimizer, jit_compile=False)
        losses = []

        class Record(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                losses.append(float(logs["step_loss"]))

        model.fit(
            dataset(0, total, args.global_batch, args.size, args.seed),
            epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, callbacks=[Record()], verbose=0,
        )
        target = model.target_encoder.weights + model.target_projector.weights
        online = model.encoder.weights + model.projector.weights + model.predictor.weights
        results[name] = {
            "losses": losses,
            "replicas": strategy.num_replicas_in_sync,
            "target_copies": len(getattr(target[0].value, "values", [None])),
            "target_replicas_identical": replicas_identical(target),
            "online": [w.tolist() for w in numpy_weights(online)],
            "target": [w.tolist() for w in numpy_weights(target)],
            "step": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        }
    # XLA under MirroredStrategy: measured, so that resolve_jit_compile's reason stays true.
    with strategy.scope():
        model, optimizer = build_model(args, synchronized=True)
        model.compile(optimizer=optimizer, jit_compile=True)
    try:
        model.fit(dataset(0, 1, args.global_batch, args.size, args.seed), epochs=1, steps_per_epoch=1, verbose=0)
        results["xla_mirrored_error"] = None
    except Exception as error:  # Whatever TensorFlow raises, the test reads its text.
        results["xla_mirrored_error"] = f"{type(error).__name__}: {error}"[:4000]
    with open(args.out, "w") as f:
        json.dump(results, f)
    print("DONE", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("train", "compare-mirrored"):
        p = sub.add_parser(command)
        p.add_argument("--epochs", type=int, default=2)
        p.add_argument("--steps-per-epoch", type=int, default=5)
        p.add_argument("--global-batch", type=int, default=8)
        p.add_argument("--size", type=int, default=8)
        p.add_argument("--width", type=int, default=4)
        p.add_argument("--encoder", default="resnet18", choices=("resnet18", "small"))
        p.add_argument("--seed", type=int, default=7)
    train_parser = sub.choices["train"]
    train_parser.add_argument("--run-dir", required=True)
    train_parser.add_argument("--strategy", default="default", choices=("default", "mirrored", "multi-worker"))
    train_parser.add_argument("--logical-cpus", type=int, default=1)
    train_parser.add_argument("--backup-every", type=int, default=3)
    train_parser.add_argument("--precision", default="float32")
    train_parser.add_argument("--sleep", type=float, default=0.0, help="seconds to wait after each step")
    train_parser.add_argument("--sleep-from", type=int, default=0, help="...from this global step on (1-based)")
    train_parser.add_argument("--nan-at-step", type=int, default=None)
    train_parser.add_argument("--jit", action="store_true", help="let resolve_jit_compile decide (else off)")
    sub.choices["compare-mirrored"].add_argument("--out", required=True)
    args = parser.parse_args(argv)
    keras.config.disable_traceback_filtering()  # Full tracebacks in the test logs.
    if args.command == "train":
        train(args)
    else:
        compare_mirrored(args)


if __name__ == "__main__":
    main()
