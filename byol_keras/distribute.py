"""Choosing and entering a `tf.distribute` strategy, and the pieces that let a long run survive.

The paper trains on 512 TPU cores with cross-replica BatchNorm. This module holds what `byol_keras/experiment.py`
needs to do the same on one or many GPUs, several machines or a TPU, and to survive a lost worker:

- `make_strategy`: `auto | mirrored | multi-worker | tpu | one-device` → a `tf.distribute.Strategy`.
- `per_replica_batch_size`: the global batch split over the replicas (an uneven split is an error).
- who writes: only the chief keeps checkpoints, logs and exports (`byol_keras.cluster`: `is_chief`,
  `worker_dir`).
- cross-replica BatchNorm: `byol_keras.layers.sync_batchnorm(encoder)`.
- `set_precision`, `resolve_jit_compile`: the dtype policy, and whether XLA can be used.
- surviving a lost worker: `byol_keras.fault_tolerance` (`StepBackup`, `StopOnNonFiniteLoss`, `batches_done`).

Typical use (the model, the optimizer and every variable are created inside the scope)::

    strategy = make_strategy("auto")
    set_precision("mixed_bfloat16")
    backup = StepBackup(os.path.join(run_dir, "backup"), save_every_steps=500)
    # The data stream starts at the batch the interrupted run would have drawn next (0 on a fresh run).
    start = batches_done(backup.latest_state(), steps_per_epoch)
    dataset = pretrain_dataset(source, augment, batch_size, seed=seed, repeat=True, start_batch=start)
    with strategy.scope():
        encoder = sync_batchnorm(resnet18()) if strategy.num_replicas_in_sync > 1 else resnet18()
        model = BYOL(encoder, ...)
        jit, why = resolve_jit_compile(strategy)
        model.compile(optimizer=..., jit_compile=jit)
    with worker_dir(run_dir, strategy) as out_dir:
        model.fit(dataset, epochs=..., steps_per_epoch=steps_per_epoch,
                  callbacks=[backup, StopOnNonFiniteLoss(), keras.callbacks.TensorBoard(out_dir)])
"""

import json
import logging
import os

import keras
import tensorflow as tf

from byol_keras import compat
from byol_keras.cluster import is_chief
from byol_keras.onednn import onednn_state, tell_if_off
from byol_keras.validation import check_positive_int

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
    global_batch = check_positive_int("global_batch", global_batch)
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(
            f"`global_batch` must be divisible by the number of replicas: global_batch={global_batch} "
            f"does not split evenly over {replicas} replicas (use a multiple of {replicas}, "
            f"e.g. {global_batch - global_batch % replicas or replicas})."
        )
    return int(global_batch) // replicas


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

    `"auto"` chooses what measured faster for the BYOL step (docs/results.md, "oneDNN, XLA and the step"):

    - on a GPU: XLA on;
    - on a CPU-only host, from what is true in this process (`byol_keras.onednn`): with TensorFlow's
      oneDNN kernels on, XLA off, because they ran the step faster than XLA's CPU code on every network
      and instruction set measured (AVX-512 and AVX2, the standard and the demo network); with them off
      (TensorFlow's default on AVX2-only CPUs when it was imported before byol_keras, or
      `TF_ENABLE_ONEDNN_OPTS=0`), XLA on, which ran the step 1.1× faster than the Eigen kernels left.
      XLA is on either way when the views are made inside the step (`augment_on_device`), whose colour
      jitter XLA fuses into a few kernels (several times faster than the graph's op-by-op kernels);
    - off, with the reason, under a strategy with several replicas (it fails there with Keras 3.15 /
      TF 2.21, see `_XLA_MULTI_REPLICA_REASON`), under `TPUStrategy` (which compiles every step with
      XLA by itself) and when TensorFlow op determinism is enabled (Keras refuses XLA then).

    An explicit `True` that cannot work is turned off with a warning; an explicit `True` on a CPU is kept.

    Args:
        strategy: a `tf.distribute.Strategy`.
        requested: `"auto"`, True or False (what `model.compile(jit_compile=...)` was given). Defaults to "auto".
        augment_on_device: bool, the model makes its views inside `train_step`. Defaults to False.

    Returns:
        `(jit_compile, reason)`: a bool and a one-line explanation, which is also logged.
    """
    if requested not in ("auto", True, False):
        raise ValueError(f"`requested` must be 'auto', True or False. Received: requested={requested!r}")
    # A script that imported TensorFlow before byol_keras left oneDNN at TensorFlow's default; on an AVX2
    # CPU that is off and the step 1.6x slower: say so once, with the fix.
    tell_if_off()
    if requested is False:
        jit, reason = False, "XLA is off: disabled on request"
    elif isinstance(strategy, tf.distribute.TPUStrategy):
        jit, reason = False, "XLA flag off: TPUStrategy compiles every step with XLA by itself"
    elif strategy.num_replicas_in_sync > 1:
        jit, reason = False, _XLA_MULTI_REPLICA_REASON
    elif _op_determinism_enabled():
        jit, reason = False, "XLA is off: TensorFlow op determinism is enabled and Keras refuses XLA with it"
    elif requested == "auto" and not augment_on_device and _cpu_only():
        jit, reason = _cpu_choice(_onednn_enabled())
    else:
        jit, reason = True, "XLA is on (one replica)"
    if requested is True and not jit:
        logger.warning("jit_compile=True was requested but cannot be used. %s", reason)
    else:
        logger.info(reason)
    return jit, reason


def _cpu_choice(onednn_enabled):
    """`(jit_compile, reason)` for the BYOL step on a CPU-only host, from whether oneDNN is on in this process.

    The rule follows the measurements in docs/results.md ("oneDNN, XLA and the step"): with oneDNN on, its
    kernels beat XLA's on the BYOL step; with oneDNN off, XLA beats TensorFlow's Eigen kernels.
    """
    if onednn_enabled:
        return False, (
            "XLA is off: on a CPU TensorFlow's oneDNN kernels (on in this process) run the BYOL step faster "
            "than XLA's (pass jit_compile=False or True to choose)"
        )
    return True, (
        "XLA is on: TensorFlow's oneDNN kernels are off in this process, and XLA runs the BYOL step faster "
        "than its Eigen kernels (pass jit_compile=False or True to choose)"
    )


def _cpu_only():
    return not tf.config.list_physical_devices("GPU")


def _onednn_enabled():
    return onednn_state()["enabled"]


def _op_determinism_enabled():
    return compat.op_determinism_enabled()  # no public getter
