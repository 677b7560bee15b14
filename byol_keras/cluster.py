"""Who this process is in a training cluster, and the rule that only one of them keeps files.

In multi-worker training every worker runs the same code, and saving reads synchronised variables (which
takes part in collectives), so every worker must save; but only the chief's files are kept. The other
workers write to a fresh temporary folder that is removed afterwards, as TensorFlow's multi-worker guide
prescribes. `byol_keras.distribute` (the run's output folder) and `byol_keras.fault_tolerance` (the backups)
both follow that rule from here:

- `task(strategy)`: this process's `(task_type, task_id)`, `(None, None)` outside a cluster.
- `is_chief(strategy)`: whether this process's files are the ones kept.
- `scratch_dir(strategy, prefix)`: a fresh temporary folder named after this worker, for a non-chief.
- `worker_dir(run_dir, strategy)`: the folder to write to, `run_dir` on the chief, else a scratch folder
  removed at the end.
- `same_on_every_worker(strategy, value)`: whether every worker of the cluster holds the same number.

A process outside a cluster (one machine, one or several devices) is its own chief.
"""

import contextlib
import os
import shutil
import tempfile

import tensorflow as tf


def task(strategy):
    """`(task_type, task_id)` of this process in a multi-worker cluster, `(None, None)` otherwise.

    Args:
        strategy: a `tf.distribute.Strategy` (anything with a `cluster_resolver` attribute, or none).

    Returns:
        tuple `(str or None, int or None)`.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy):
    """Whether this process writes the run's checkpoints, backups, TensorBoard logs and exports.

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


def scratch_dir(strategy, prefix="byol"):
    """A fresh temporary folder for a worker whose files are not kept, named `<prefix>-<task>-<id>-...`.

    The caller removes it (`shutil.rmtree`) when it is done; `worker_dir` does both.

    Args:
        strategy: a `tf.distribute.Strategy`.
        prefix: str, the start of the folder's name. Defaults to "byol".

    Returns:
        str, the folder's path.
    """
    task_type, task_id = task(strategy)
    return tempfile.mkdtemp(prefix=f"{prefix}-{task_type}-{task_id}-")


@contextlib.contextmanager
def worker_dir(run_dir, strategy):
    """Context manager giving the folder this process writes to: `run_dir` on the chief, else a scratch folder.

    The scratch folder is removed when the context exits, also when the block raises.

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
    scratch = scratch_dir(strategy)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def same_on_every_worker(strategy, value):
    """Whether every worker of a multi-worker cluster holds the same number `value`, and their mean.

    A collective across the workers (every worker must call it at the same point). Outside a cluster, or in
    a cluster of one, it is `(True, value)` without any collective.

    Args:
        strategy: a `tf.distribute.Strategy`.
        value: a number (exactly representable as a float64 and its square too, e.g. a step count).

    Returns:
        tuple `(bool, float)`: all equal, and the mean over the workers.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True, float(value)
    if sum(len(v) for v in resolver.cluster_spec().as_dict().values()) < 2:
        return True, float(value)
    # ReduceOp has only SUM and MEAN: n·Σv² = (Σv)² holds exactly when every v is the same.
    local = tf.constant([1.0, float(value), float(value) ** 2], tf.float64)
    per_replica = strategy.run(lambda: tf.identity(local))
    n, total, squares = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()
    return bool(n * squares == total * total), float(total / n)


def any_worker(strategy, flag):
    """Whether `flag` is true on any worker of a multi-worker cluster (e.g. "this worker was signalled").

    A collective across the workers, as `same_on_every_worker` (every worker must call it at the same point);
    outside a cluster, or in a cluster of one, `flag` itself without any collective.

    Args:
        strategy: a `tf.distribute.Strategy`.
        flag: bool.

    Returns:
        bool.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return bool(flag)
    if sum(len(v) for v in resolver.cluster_spec().as_dict().values()) < 2:
        return bool(flag)
    local = tf.constant(1.0 if flag else 0.0, tf.float64)
    per_replica = strategy.run(lambda: tf.identity(local))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy() > 0)
