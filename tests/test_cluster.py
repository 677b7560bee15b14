"""byol_keras.cluster: who this process is in a cluster, and that only the chief's files are kept.

The collective of `same_on_every_worker` across real workers runs in test_distribute.py's two-process
tests (through `StepBackup`); here, everything that needs no second process.
"""

import os
import shutil

import pytest

from byol_keras.cluster import is_chief, same_on_every_worker, scratch_dir, task, worker_dir
from helpers import fake_strategy

WORKERS = {"worker": ["a:1", "b:2"]}


def test_task_names_this_process():
    assert task(fake_strategy()) == (None, None)
    assert task(fake_strategy(task_type="worker", task_id=1, cluster=WORKERS)) == ("worker", 1)


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


def test_scratch_dir_is_new_and_named_after_the_worker():
    other = fake_strategy(task_type="worker", task_id=1, cluster=WORKERS)
    first, second = scratch_dir(other, prefix="byol-backup"), scratch_dir(other, prefix="byol-backup")
    try:
        assert first != second and os.path.isdir(first) and os.listdir(first) == []
        assert os.path.basename(first).startswith("byol-backup-worker-1-")
    finally:
        shutil.rmtree(first), shutil.rmtree(second)


def test_same_on_every_worker_outside_a_cluster_needs_no_collective():
    # A strategy without `run`/`reduce`: a collective would fail.
    assert same_on_every_worker(fake_strategy(), 7) == (True, 7.0)
    alone = fake_strategy(task_type="worker", task_id=0, cluster={"worker": ["a:1"]})
    assert same_on_every_worker(alone, -1) == (True, -1.0)
