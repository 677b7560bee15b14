"""What resuming the data stream at batch k costs, three ways, on an image folder (CIFAR-10's 50,000 by default).

    python -m benchmarks.resume_data --path per-image --at 195 --epochs-before 100
    python -m benchmarks.resume_data --path native --at 195 --epochs-before 100

A run killed at global step k must go on with the batches an uninterrupted run draws from step k. Measured on
`pretrain_dataset(load_source(DATA), BYOLAugment(32, blur=False), 128, seed=0, repeat=True)`, three ways:

- `start_batch` (what `byol-pretrain` does): the stream rebuilt at batch k, every batch a function of the seed
  and its position. Seconds from building the pipeline to its first batch, at k = 0 (a fresh start), at
  `--at` (mid-epoch) and at `--at` after `--epochs-before` epochs.
- `skip`: the stream from batch 0 with `dataset.skip(k)` (what the old docstrings recommended; exact too now
  that every draw is keyed by position): every skipped batch is read, decoded and augmented on the way.
- `iterator checkpoint`: `tf.train.Checkpoint(iterator=...)` of the running stream after k batches, written
  and read back, as a backup would do every `--backup-every` steps: bytes on disk, seconds to write, seconds
  to restore and draw the next batch. (Keras 3.15's `fit` keeps its iterator in a local variable of `fit`, out
  of a callback's reach; this measures the cost as if it were reachable. The pipeline's `py_function` (Pillow
  for palette BMPs) makes tf.data refuse to checkpoint it unless told to ignore external state, as done here.)

`--path per-image` forces the per-image path without a cache (`pretrain_dataset(..., path="per_image",
cache=False)`: file names shuffled before decoding; not the default for CIFAR's 32-px images); `--path native`
takes the default, the native-size path (one size: decoded once, cached in memory, decoded images shuffled).
Prints one JSON line per figure.
"""

import argparse
import os
import shutil
import tempfile
import time

from benchmarks import report


def _first_batch_seconds(make):
    started = time.perf_counter()
    dataset = make()
    next(iter(dataset))
    return time.perf_counter() - started


def run(args):
    import tensorflow as tf

    from byol_keras.views import BYOLAugment
    from byol_keras.data import load_source, pretrain_dataset

    report.set_threads(args.threads)
    folder = os.path.join(args.data, "train") if os.path.isdir(os.path.join(args.data, "train")) else args.data
    if not os.path.isdir(folder):
        raise SystemExit(f"error: no image folder at {args.data!r}")
    started = time.perf_counter()
    source = load_source(folder, verify=args.path == "native")  # as measured before: the open's cost each way
    forced = {"path": "per_image", "cache": False} if args.path == "per-image" else {}
    open_seconds = time.perf_counter() - started
    steps_per_epoch = source.num_examples // args.batch

    # One BYOLAugment for every pipeline: its draws are keyed by position, so sharing it changes no batch, and its
    # XLA-compiled views are compiled once rather than once per pipeline (a constant that would hide the rest).
    augment = BYOLAugment(32, blur=False, seed=0)

    def stream(start_batch=0, checkpointable=False):
        dataset = pretrain_dataset(source, augment, args.batch, seed=0, repeat=True, start_batch=start_batch, **forced)
        if checkpointable:
            # The decoder's Pillow branch for palette BMPs is a `py_function`, whose (empty) state tf.data refuses
            # to checkpoint unless told to ignore it.
            options = tf.data.Options()
            options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
            dataset = dataset.with_options(options)
        return dataset

    config = {"data": folder, "path": args.path, "batch": args.batch, "images": source.num_examples,
              "steps_per_epoch": steps_per_epoch, "at": args.at, "epochs_before": args.epochs_before,
              "threads": args.threads, "open_seconds": round(open_seconds, 2)}
    next(iter(stream(0)))  # compiled once, so that the first figure does not pay for the compilation alone
    later = args.epochs_before * steps_per_epoch + args.at
    for name, k in (("start_batch=0", 0), (f"start_batch={args.at}", args.at), (f"start_batch={later}", later)):
        values = [_first_batch_seconds(lambda: stream(k)) for _ in range(args.runs)]
        report.emit("resume_data", dict(config, approach=name), values, "s to the first batch")

    values = [_first_batch_seconds(lambda: stream(0).skip(args.at)) for _ in range(args.runs)]
    report.emit("resume_data", dict(config, approach=f"skip({args.at})"), values, "s to the first batch")

    # The iterator checkpoint: the running stream after `at` batches, saved and restored.
    folder_out = tempfile.mkdtemp(prefix="byol-iterator-")
    try:
        writes, sizes, restores = [], [], []
        for _ in range(args.runs):
            dataset = stream(0, checkpointable=True)
            iterator = iter(dataset)
            for _ in range(args.at):
                next(iterator)
            checkpoint = tf.train.Checkpoint(iterator=iterator)
            started = time.perf_counter()
            path = checkpoint.write(os.path.join(folder_out, "ckpt"))
            writes.append(time.perf_counter() - started)
            sizes.append(sum(os.path.getsize(os.path.join(folder_out, f)) for f in os.listdir(folder_out)) / 2**20)
            expected = next(iterator)
            fresh = iter(stream(0, checkpointable=True))
            started = time.perf_counter()
            tf.train.Checkpoint(iterator=fresh).read(path).assert_consumed()
            got = next(fresh)
            restores.append(time.perf_counter() - started)
            same = all(bool(tf.reduce_all(a == b)) for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(expected)))
            for f in os.listdir(folder_out):
                os.remove(os.path.join(folder_out, f))
        report.emit("resume_data", dict(config, approach="iterator checkpoint: write"), writes, "s",
                    checkpoint_mib=report.summary(sizes))
        report.emit("resume_data", dict(config, approach="iterator checkpoint: restore + next batch"), restores, "s",
                    next_batch_equal=same)
    finally:
        shutil.rmtree(folder_out, ignore_errors=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=report.DEFAULT_CIFAR, help="image folder (its train/ if it has one)")
    parser.add_argument("--path", choices=("per-image", "native"), default="per-image")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--at", type=int, default=195, help="the batch k to resume at, within an epoch")
    parser.add_argument("--epochs-before", dest="epochs_before", type=int, default=100,
                        help="epochs before the later resume point")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
