"""Choosing and entering a `tf.distribute` strategy, and the pieces that let a long run survive.

The paper trains on 512 TPU cores with cross-replica BatchNorm. This module holds what `training/pretrain.py`
needs to do the same on one or many GPUs, several machines or a TPU, and to survive a lost worker:

- `make_strategy`: `auto | mirrored | multi-worker | tpu | one-device` → a `tf.distribute.Strategy`.
- `per_replica_batch_size`: the global batch split over the replicas (an uneven split is an error).
- `is_chief`, `worker_dir`: only the chief writes checkpoints, logs and exports; the other workers write
  to temporary directories that are removed, as TensorFlow's multi-worker guide prescribes.
- `sync_batchnorm`: an encoder's BatchNormalization layers turned into cross-replica ones.
- `set_precision`, `resolve_jit_compile`: the dtype policy, and whether XLA can be used.
- `StepBackup`: a `model.fit` callback that backs up the full training state every N global steps,
  atomically, and restores it mid-epoch.
- `StopOnNonFiniteLoss`: stops at the first non-finite loss, naming the global step.

Typical use (the model, the optimizer and every variable are created inside the scope)::

    strategy = make_strategy("auto")
    set_precision("mixed_bfloat16")
    backup = StepBackup(os.path.join(run_dir, "backup"), save_every_steps=500)
    start = (backup.latest_state() or {}).get("step", 0)   # the data stream skips what was seen
    with strategy.scope():
        encoder = sync_batchnorm(resnet18()) if strategy.num_replicas_in_sync > 1 else resnet18()
        model = BYOL(encoder, ...)
        jit, why = resolve_jit_compile(strategy)
        model.compile(optimizer=..., jit_compile=jit)
    with worker_dir(run_dir, strategy) as out_dir:
        model.fit(dataset.skip(start), epochs=..., steps_per_epoch=...,
                  callbacks=[backup, StopOnNonFiniteLoss(), keras.callbacks.TensorBoard(out_dir)])
"""

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "mirrored", "multi-worker", "tpu", "one-device")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# Measured with Keras 3.15.1 / TensorFlow 2.21.0 on 2 logical CPU devices (tests/test_distribute.py
# checks it still holds): Keras puts `jit_compile` on the function that *contains* `strategy.run`, so XLA
# has to compile all replicas into one cluster on one device, and it fails at the first step.
_XLA_MULTI_REPLICA_REASON = (
    "XLA is off: under a strategy with more than one replica Keras 3.15 jit-compiles the whole replicated "
    "step, whose variables live on several devices, and TensorFlow 2.21 rejects it (\"Trying to access "
    "resource ... located in device ...:1 from device ...:0\", measured on 2 logical CPU devices)"
)


# --------------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------------


def make_strategy(name="auto", tpu=None, devices=None):
    """Create the `tf.distribute.Strategy` named by `--strategy`, and log the choice and replica count.

    Call it first thing in the program: the multi-worker and TPU strategies must be created before any
    other TensorFlow operation runs. Then create the model and the optimizer inside `strategy.scope()`.

    - `"auto"`: `MirroredStrategy` over all local GPUs when more than one is visible, otherwise the default
      strategy (one device, no replication).
    - `"mirrored"`: `MirroredStrategy` over `devices` (defaults to all local GPUs, or the CPU).
    - `"multi-worker"`: `MultiWorkerMirroredStrategy`; the cluster and this worker's role come from the
      standard `TF_CONFIG` environment variable. Collectives use `AUTO` (NCCL on GPUs, ring on CPUs).
    - `"tpu"`: `TPUStrategy` through a `TPUClusterResolver(tpu=tpu)`.
    - `"one-device"`: `OneDeviceStrategy` on the first GPU, or the CPU when there is none.

    Args:
        name: str, one of `STRATEGIES`. Defaults to "auto".
        tpu: str or None, the TPU name or address for `"tpu"` (None: the resolver's default, e.g. the
            TPU VM itself or the `TPU_NAME` environment variable). Defaults to None.
        devices: list of device strings or None, only for `"mirrored"` (e.g. `["/cpu:0", "/cpu:1"]` after
            splitting the CPU into logical devices). Defaults to None.

    Returns:
        A `tf.distribute.Strategy`.

    Example:

    >>> make_strategy("one-device").num_replicas_in_sync
    1
    """
    if name not in STRATEGIES:
        raise ValueError(f"`name` must be one of {STRATEGIES}. Received: name={name!r}")
    if tpu is not None and name != "tpu":
        raise ValueError(f"`tpu` is only used with name='tpu'. Received: name={name!r}, tpu={tpu!r}")
    if devices is not None and name != "mirrored":
        raise ValueError(
            f"`devices` is only used with name='mirrored'. Received: name={name!r}, devices={devices!r}"
        )

    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif name == "multi-worker":
        _check_tf_config()
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    elif name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    else:  # one-device
        gpus = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")

    role = ""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and resolver.task_type is not None:
        role = f", this process is {resolver.task_type} {resolver.task_id}" + (
            " (chief)" if is_chief(strategy) else ""
        )
    logger.info(
        "Distribution: --strategy %s -> %s with %d replica(s)%s",
        name, type(strategy).__name__, strategy.num_replicas_in_sync, role,
    )
    return strategy


def _check_tf_config():
    """Fail early, naming the variable, when `TF_CONFIG` is present but unusable."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        logger.warning(
            "--strategy multi-worker without a TF_CONFIG environment variable: running as a single worker."
        )
        return
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"`TF_CONFIG` must be JSON. Received: TF_CONFIG={raw!r} ({error})") from error
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise ValueError(
            '`TF_CONFIG` must be {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
            f'"index": i}}}}. Received: TF_CONFIG={raw!r}'
        )


def per_replica_batch_size(global_batch, strategy):
    """The batch each replica sees when `global_batch` is split evenly across `strategy`'s replicas.

    Keras splits each batch of a `tf.data` dataset across the replicas, so the dataset is batched with the
    *global* size (with `drop_remainder=True`, so every replica always gets the same number of examples
    and the synchronised BatchNorm statistics are those of the whole global batch).

    Args:
        global_batch: positive int, the batch size over all replicas.
        strategy: a `tf.distribute.Strategy`.

    Returns:
        int, `global_batch // strategy.num_replicas_in_sync`.

    Example:

    >>> per_replica_batch_size(256, tf.distribute.get_strategy())
    256
    """
    if not isinstance(global_batch, (int, np.integer)) or isinstance(global_batch, bool) or global_batch <= 0:
        raise ValueError(f"`global_batch` must be a positive integer. Received: global_batch={global_batch!r}")
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(
            f"`global_batch` must be divisible by the number of replicas: global_batch={global_batch} "
            f"does not split evenly over {replicas} replicas (use a multiple of {replicas}, "
            f"e.g. {global_batch - global_batch % replicas or replicas})."
        )
    return int(global_batch) // replicas


def _task(strategy):
    """`(task_type, task_id)` of this process in a multi-worker cluster, `(None, None)` otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy):
    """Whether this process writes the run's checkpoints, TensorBoard logs and exports.

    The chief is the `"chief"` task when the cluster has one, otherwise worker 0; a process that is not
    part of a cluster (one machine, one or several devices) is its own chief.

    Args:
        strategy: a `tf.distribute.Strategy`.

    Returns:
        bool.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


@contextlib.contextmanager
def worker_dir(run_dir, strategy):
    """Context manager giving the directory this process writes to: `run_dir` on the chief, else a temp dir.

    In multi-worker training every worker must run the same saving code (saving reads variables, which can
    take part in collective operations), but only the chief's files are kept. The other workers write to a
    fresh temporary directory that is removed when the context exits, as TensorFlow's multi-worker guide
    prescribes.

    Args:
        run_dir: str, the run's output directory (created on the chief if missing).
        strategy: a `tf.distribute.Strategy`.

    Yields:
        str, the directory to write to.
    """
    if is_chief(strategy):
        os.makedirs(run_dir, exist_ok=True)
        yield run_dir
        return
    task_type, task_id = _task(strategy)
    scratch = tempfile.mkdtemp(prefix=f"byol-{task_type}-{task_id}-")
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------
# Synchronised BatchNorm
# --------------------------------------------------------------------------------------------------------


def sync_batchnorm(encoder):
    """Return `encoder` with every `BatchNormalization` layer synchronised across replicas, weights kept.

    Paper, appendix B: "we use ... batch normalization ... the batch statistics are computed across all
    devices" (the official code uses cross-replica BN). Keras' `BatchNormalization(synchronized=True)`
    computes the mean and variance over the global batch under a `tf.distribute` strategy and is an
    ordinary BatchNorm on one replica, so the converted encoder is interchangeable with the original.

    Functional and Sequential models (ours, `keras.applications`, a user's), including nested ones, are
    cloned: the original is left untouched. A subclassed model cannot be cloned generically, so its
    BatchNormalization layers are switched in place and the same object is returned (call this before
    `compile`/`fit` traces it).

    Args:
        encoder: a `keras.Model`.

    Returns:
        A `keras.Model` with the same weights whose BatchNormalization layers have `synchronized=True`.

    Example:

    >>> from byol_keras.encoders import resnet18
    >>> synced = sync_batchnorm(resnet18(width=2, input_shape=(8, 8, 3)))
    >>> all(l.synchronized for l in synced._flatten_layers() if isinstance(l, keras.layers.BatchNormalization))
    True
    """
    if not isinstance(encoder, keras.Model):
        raise TypeError(
            f"`encoder` must be a keras.Model. Received: encoder={encoder!r} of type {type(encoder).__name__}"
        )
    if not _is_graph_model(encoder):
        for layer in encoder._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
        return encoder

    def clone_layer(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            config = layer.get_config()
            config["synchronized"] = True
            return layer.__class__.from_config(config)
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(encoder, clone_function=clone_layer, recursive=True)
    weights = encoder.get_weights()
    if len(weights) != len(clone.weights):
        raise ValueError(
            f"Cloning {encoder.name!r} to synchronise its BatchNorm gave {len(clone.weights)} weights "
            f"instead of {len(weights)}; one of its layers does not rebuild from its get_config()."
        )
    clone.set_weights(weights)
    return clone


def _is_graph_model(model):
    """True for Functional and Sequential models (a graph of layers that `clone_model` can rebuild)."""
    from keras.src.models.functional import Functional  # Keras has no public name for the class.

    return isinstance(model, (keras.Sequential, Functional))


# --------------------------------------------------------------------------------------------------------
# Precision and XLA
# --------------------------------------------------------------------------------------------------------


def set_precision(name):
    """Set the global Keras dtype policy for `--precision`; call it before building the model.

    `mixed_float16`: Keras wraps the optimizer in a `LossScaleOptimizer` at `compile` (BYOL's train_step
    calls `optimizer.scale_loss`), a step with non-finite gradients is skipped and its EMA update too.
    `mixed_bfloat16` needs no loss scaling. Variables (and the target network) stay float32 in both; the
    loss is computed in float32.

    Args:
        name: str, one of `PRECISIONS`.

    Returns:
        The `keras.DTypePolicy` now in force.
    """
    if name not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: precision={name!r}")
    keras.config.set_dtype_policy(name)
    logger.info("Precision: %s", name)
    return keras.config.dtype_policy()


def resolve_jit_compile(strategy, requested="auto", augment_on_device=False):
    """Decide whether to compile the training step with XLA (`model.compile(jit_compile=...)`).

    `"auto"` chooses what measured faster for the BYOL step (`benchmarks/README.md`):

    - on a GPU: XLA on;
    - on a CPU-only host: XLA off, because TensorFlow's oneDNN kernels ran the step faster than XLA's
      CPU code on every network and instruction set measured (AVX-512 and AVX2, the standard and the
      demo network) — unless the views are made inside the step (`augment_on_device`), whose colour
      jitter XLA fuses into a few kernels (several times faster than the graph's op-by-op kernels);
    - off, with the reason, under a strategy with several replicas (it fails there with Keras 3.15 /
      TF 2.21, see `_XLA_MULTI_REPLICA_REASON`), under `TPUStrategy` (which compiles every step with
      XLA by itself) and when TensorFlow op determinism is enabled (Keras refuses XLA then).

    An explicit `True` that cannot work is turned off with a warning; an explicit `True` on a CPU is kept.

    Args:
        strategy: a `tf.distribute.Strategy`.
        requested: `"auto"`, True or False (`--jit-compile`). Defaults to "auto".
        augment_on_device: bool, the model makes its views inside `train_step`. Defaults to False.

    Returns:
        `(jit_compile, reason)`: a bool and a one-line explanation, which is also logged.
    """
    if requested not in ("auto", True, False):
        raise ValueError(f"`requested` must be 'auto', True or False. Received: requested={requested!r}")
    if requested is False:
        jit, reason = False, "XLA is off: disabled on request"
    elif isinstance(strategy, tf.distribute.TPUStrategy):
        jit, reason = False, "XLA flag off: TPUStrategy compiles every step with XLA by itself"
    elif strategy.num_replicas_in_sync > 1:
        jit, reason = False, _XLA_MULTI_REPLICA_REASON
    elif _op_determinism_enabled():
        jit, reason = False, "XLA is off: TensorFlow op determinism is enabled and Keras refuses XLA with it"
    elif requested == "auto" and not augment_on_device and _cpu_only():
        jit, reason = False, (
            "XLA is off: on a CPU TensorFlow's oneDNN kernels run the BYOL step faster than XLA's "
            "(pass jit_compile=True to override)"
        )
    else:
        jit, reason = True, "XLA is on (one replica)"
    if requested is True and not jit:
        logger.warning("jit_compile=True was requested but cannot be used. %s", reason)
    else:
        logger.info(reason)
    return jit, reason


def cpu_flags(path="/proc/cpuinfo"):
    """The first processor's feature flags (Linux `/proc/cpuinfo`), or an empty set where there is none.

    Args:
        path: str. Defaults to "/proc/cpuinfo".

    Returns:
        set of str, e.g. {"avx2", "fma", "avx512f", ...}.
    """
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_only():
    return not tf.config.list_physical_devices("GPU")


def _op_determinism_enabled():
    # No public getter for `tf.config.experimental.enable_op_determinism()`; Keras reads the same one.
    from tensorflow.python.framework.config import is_op_determinism_enabled

    return is_op_determinism_enabled()


# --------------------------------------------------------------------------------------------------------
# Fault tolerance
# --------------------------------------------------------------------------------------------------------

_STATE_FILE = "state.json"
_WEIGHTS_FILE = "model.weights.h5"
_PREFIX = "step-"
_TMP_PREFIX = ".tmp-"


def _is_finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # Not a scalar: nothing to judge.


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class StepBackup(keras.callbacks.Callback):
    """Back up the whole training state every N global steps, atomically, and resume from it mid-epoch.

    Why not `keras.callbacks.BackupAndRestore(save_freq=N)` (Keras 3.15)? It saves every N batches but
    restores the epoch only: a run killed mid-epoch replays that epoch from its first batch with the
    weights of its middle, so it runs more steps than asked; after a restore, the backups of the resumed
    epoch record epoch 0 (its epoch counter is only set at an epoch end), so a second kill restarts the run
    from the beginning; it overwrites `latest.weights.h5` in place and writes the metadata after it (a kill
    during the write leaves an unloadable or inconsistent backup); every worker writes to the same files
    in multi-worker training; and the restored initial epoch sticks to the model for later `fit` calls.

    This callback:

    - saves every `save_every_steps` *global* steps (`optimizer.iterations`, which also drives τ and the
      learning rate), and when training ends, the model's weights and the optimizer's variables (the step
      counter, momenta, a loss scale) with `model.save_weights`, plus `state.json` with the global step,
      the epoch and the number of batches done in it;
    - writes to `backup_dir/.tmp-step-K`, flushes, then renames it to `backup_dir/step-K` and deletes older
      backups, so the newest `step-*` directory is always complete; leftover `.tmp-*` directories of a
      killed write are ignored and removed;
    - never saves after a non-finite loss or when a trainable weight is not finite: the last good backup
      stays;
    - on `fit` start, loads the newest backup, sets the initial epoch and ends the resumed epoch after the
      batches it still had to do, so the run does exactly `epochs × steps_per_epoch` steps and later
      epochs start at the same global steps as in an uninterrupted run;
    - in multi-worker training, every worker saves (saving reads synchronised variables, which takes part
      in collectives) but only the chief writes to `backup_dir`; the others write to a temporary directory
      that is removed. Every worker restores from `backup_dir`, so it must be on a file system that all
      workers read (a shared disk or a bucket); the workers check that they restored the same step.

    The data position: the callback cannot move `fit`'s input. For an exact resume, make the input a
    deterministic stream of batches and skip what was consumed, e.g.
    `dataset.skip((backup.latest_state() or {}).get("step", 0))` on a `repeat()`ed dataset with seeded
    shuffling and per-element seeded augmentation. Without that, the resumed run restarts the data stream
    (a statistically equivalent but different sequence of batches).

    Needs a known number of steps per epoch (`steps_per_epoch=` or a dataset of known length) to resume
    mid-epoch; without one, a mid-epoch backup restarts its epoch. The resumed epoch is ended through
    `model.stop_training`, which this callback then resets at that epoch's end: a callback that asks to stop
    at the end of exactly that epoch is overridden (it will ask again at the next).

    Args:
        backup_dir: str, where the chief keeps its backup; used by this run only.
        save_every_steps: positive int, N.
        delete_on_end: bool, remove the backup when `fit` ends normally. Off by default, so that running a
            finished command again does not train again. Defaults to False.

    Example:

    >>> backup = StepBackup("/tmp/run/backup", save_every_steps=500)  # doctest: +SKIP
    >>> model.fit(dataset, epochs=100, steps_per_epoch=390, callbacks=[backup])  # doctest: +SKIP
    """

    def __init__(self, backup_dir, save_every_steps, delete_on_end=False):
        super().__init__()
        if not isinstance(backup_dir, (str, os.PathLike)) or not str(backup_dir):
            raise ValueError(f"`backup_dir` must be a non-empty path. Received: backup_dir={backup_dir!r}")
        if (
            not isinstance(save_every_steps, (int, np.integer))
            or isinstance(save_every_steps, bool)
            or save_every_steps <= 0
        ):
            raise ValueError(
                f"`save_every_steps` must be a positive integer. Received: save_every_steps={save_every_steps!r}"
            )
        self.backup_dir = os.fspath(backup_dir)
        self.save_every_steps = int(save_every_steps)
        self.delete_on_end = bool(delete_on_end)
        self.restored_state = None
        self._scratch = None
        self._epoch = 0
        self._resume_epoch = None
        self._resume_batches = 0
        self._ended_epoch_early = False
        self._last_loss_finite = True
        self._last_saved_step = None

    # -- reading ------------------------------------------------------------------------------------------

    def latest_state(self):
        """The newest complete backup's state, or None; safe to call before `fit` (no TensorFlow needed).

        Returns:
            dict with `step` (global step), `epoch` (0-based epoch to resume in), `batch` (batches already
            done in it), `steps_per_epoch` and `path` (the backup directory), or None when there is none.
        """
        if not os.path.isdir(self.backup_dir):
            return None
        steps = []
        for entry in os.listdir(self.backup_dir):
            if entry.startswith(_PREFIX):
                try:
                    steps.append((int(entry[len(_PREFIX):]), entry))
                except ValueError:
                    continue
        for _, entry in sorted(steps, reverse=True):
            path = os.path.join(self.backup_dir, entry)
            try:
                with open(os.path.join(path, _STATE_FILE)) as f:
                    state = json.load(f)
            except (OSError, ValueError):
                continue  # Only complete directories are ever renamed to step-*; be lenient anyway.
            if os.path.exists(os.path.join(path, _WEIGHTS_FILE)):
                state["path"] = path
                return state
        return None

    # -- fit hooks ------------------------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        strategy = self.model.distribute_strategy
        self._chief = is_chief(strategy)
        if self._chief:
            os.makedirs(self.backup_dir, exist_ok=True)
            for entry in os.listdir(self.backup_dir):
                if entry.startswith(_TMP_PREFIX):  # A write that a kill interrupted.
                    shutil.rmtree(os.path.join(self.backup_dir, entry), ignore_errors=True)
            self._root = self.backup_dir
        else:
            task_type, task_id = _task(strategy)
            self._scratch = tempfile.mkdtemp(prefix=f"byol-backup-{task_type}-{task_id}-")
            self._root = self._scratch
        self._last_loss_finite = True
        self._ended_epoch_early = False
        self._resume_epoch, self._resume_batches = None, 0
        self._last_saved_step = None
        self._position = None
        state = self.latest_state()
        self._agree_across_workers(strategy, state["step"] if state else -1)
        self.restored_state = state
        optimizer = self.model.optimizer
        if state is None:
            self._prev_step = int(keras.ops.convert_to_numpy(optimizer.iterations))
            return
        if optimizer is not None and not optimizer.built:
            # The optimizer's variables (step counter, momenta) must exist to be loaded.
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(state["path"], _WEIGHTS_FILE))
        step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        if step != state["step"]:
            raise ValueError(
                f"The backup in {state['path']!r} says global step {state['step']} but holds an optimizer "
                f"at step {step}; was it written by a different optimizer?"
            )
        epoch, batch = int(state["epoch"]), int(state["batch"])
        steps = self.params.get("steps")
        if batch and steps != state.get("steps_per_epoch"):
            logger.warning(
                "The backup at step %d was written with %s steps per epoch, this run has %s: epoch %d "
                "restarts from its first batch.", step, state.get("steps_per_epoch"), steps, epoch + 1,
            )
            batch = 0
        self.model._initial_epoch = epoch
        self._resume_epoch, self._resume_batches = epoch, batch
        self._last_saved_step = self._prev_step = step
        logger.info(
            "Resumed from %s: global step %d, epoch %d, %d batch(es) of it already done.",
            state["path"], step, epoch + 1, batch,
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        if "loss" in logs:
            self._last_loss_finite = self._last_loss_finite and _is_finite(logs["loss"])
        done = batch + 1 + (self._resume_batches if self._epoch == self._resume_epoch else 0)
        steps = self.params.get("steps")
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self._position = (self._epoch, done)
        # Every time the global step passes a multiple of N (it moves by more than one per call with
        # `steps_per_execution` > 1, and not at all on a step that a loss-scale optimizer skipped).
        if step // self.save_every_steps > self._prev_step // self.save_every_steps:
            self._save(step, self._epoch, done, steps)
        self._prev_step = step
        if self._epoch == self._resume_epoch and self._resume_batches and steps and done >= steps:
            # The resumed epoch is complete: end it here. `fit` only breaks out of an epoch through
            # `stop_training`, which `on_epoch_end` resets so that the next epoch runs.
            self.model.stop_training = True
            self._ended_epoch_early = True

    def on_epoch_end(self, epoch, logs=None):
        if self._ended_epoch_early:
            self.model.stop_training = False
            self._ended_epoch_early = False

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None  # Keras would start every later `fit` at the restored epoch.
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self._position is not None and step != self._last_saved_step:
            self._save(step, *self._position, self.params.get("steps"))
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if self.delete_on_end and self._chief and self._last_loss_finite:
            shutil.rmtree(self.backup_dir, ignore_errors=True)

    # -- writing --------------------------------------------------------------------------------------------

    def _save(self, step, epoch, done, steps_per_epoch):
        if not self._last_loss_finite:
            logger.warning("Not backing up step %d: the loss is not finite; the last good backup stays.", step)
            return
        if not all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in self.model.trainable_variables):
            logger.warning("Not backing up step %d: a weight is not finite; the last good backup stays.", step)
            return
        if steps_per_epoch and done >= steps_per_epoch:
            epoch, done = epoch + 1, 0
        name = f"{_PREFIX}{step:09d}"
        final = os.path.join(self._root, name)
        if os.path.exists(final):
            self._last_saved_step = step
            return
        tmp = os.path.join(self._root, _TMP_PREFIX + name)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        self.model.save_weights(os.path.join(tmp, _WEIGHTS_FILE))
        state = {"step": step, "epoch": epoch, "batch": done, "steps_per_epoch": steps_per_epoch}
        with open(os.path.join(tmp, _STATE_FILE), "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        with open(os.path.join(tmp, _WEIGHTS_FILE), "rb") as f:
            os.fsync(f.fileno())
        # The rename is the commit point: a reader sees either no step-K or a complete one.
        os.rename(tmp, final)
        _fsync_dir(self._root)
        for entry in os.listdir(self._root):
            if entry.startswith(_PREFIX) and entry != name:
                shutil.rmtree(os.path.join(self._root, entry), ignore_errors=True)
        self._last_saved_step = step

    @staticmethod
    def _agree_across_workers(strategy, step):
        """In a multi-worker cluster, check that every worker found the same backup (a shared backup_dir)."""
        resolver = getattr(strategy, "cluster_resolver", None)
        if resolver is None or resolver.task_type is None:
            return
        if sum(len(v) for v in resolver.cluster_spec().as_dict().values()) < 2:
            return
        # ReduceOp has only SUM and MEAN: n·Σv² = (Σv)² holds exactly when every v is the same.
        value = tf.constant([1.0, float(step), float(step) ** 2], tf.float64)
        per_replica = strategy.run(lambda: tf.identity(value))
        n, total, squares = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()
        if n * squares != total * total:
            raise ValueError(
                f"The workers found different backups (this one: global step {step}, the mean over the "
                f"workers: {total / n:g}; -1 means none). "
                "`backup_dir` must be on a file system that every worker reads."
            )


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Stop `fit` at the first batch whose loss is NaN or infinite, with a message naming the global step.

    The global step is the value of `optimizer.iterations` when the batch began: the index of the update
    (the k of τ_k and of the learning rate). The weights after that step are not trusted: `StepBackup`
    refuses to save them, whatever the order of the callbacks, so the last good backup stays. After `fit`
    returns, `stopped_at_step` and `message` say what happened (None when training ended normally), so
    that an entry point can exit with an error.

    A `keras.callbacks.TerminateOnNaN` (which stops gracefully too, but names only the batch index within
    the epoch) that also watches another key and remembers the global step and the message.

    Args:
        monitor: str, the log to watch. Defaults to "loss".
    """

    def __init__(self, monitor="loss"):
        super().__init__(raise_error=False)
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"`monitor` must be a non-empty string. Received: monitor={monitor!r}")
        self.monitor = monitor
        self.stopped_at_step = None
        self.message = None
        self._step = 0
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self.stopped_at_step = None
        self.message = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_batch_end(self, batch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or _is_finite(value):
            return
        self.stopped_at_step = self._step
        self.message = (
            f"Non-finite {self.monitor} ({float(value)}) at global step {self._step} "
            f"(epoch {self._epoch + 1}, batch {batch + 1}): training stopped. The weights of this step are "
            "not backed up; the last good backup is kept."
        )
        logger.error(self.message)
        self.model.stop_training = True
