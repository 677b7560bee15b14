"""Input-pipeline throughput: both BYOL views from the CIFAR-10 JPEG folder, decoding included.

    python -m benchmarks.pipeline --size 32 --blur 0                   # the issue's 32 px figure
    python -m benchmarks.pipeline --size 96 --blur 1                   # 96 px with the paper's blur
    python -m benchmarks.pipeline --size 32 --blur 0 --cache 1         # decoded images cached in memory
    python -m benchmarks.pipeline --stages --size 32                   # cost of each augmentation stage

`byol_keras.data.pretrain_dataset` over `../shared/data/cifar10/train` with `BYOLAugment` (the paper's
two views, Table 6), batch 256, images read at their stored 32 px and cropped-and-resized to `--size`
(as the peer's `RandomResizedCrop`, `../shared/bench/peer_augment.py`). With `--cache 0` (default)
every batch decodes its JPEGs again, as the peer's DataLoader does; `--cache 1` keeps the decoded
uint8 images after the first epoch (what `pretrain_dataset(cache="auto")` does for CIFAR). Each run
is `--batches` batches timed with `time.perf_counter`; the pipeline's start-up and first batch are not
counted. Prints one JSON line: images/second (pairs of views per second, the peer's unit).

`--stages` instead times each stage of one view on one in-memory batch (a `tf.function`, no tf.data),
to show where the time goes.
"""

import argparse
import os
import time

from benchmarks import report

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402


def run(args):
    from byol_keras.augment import BYOLAugment
    from byol_keras.data import load_source, pretrain_dataset

    report.set_threads(args.threads)
    if not os.path.isdir(os.path.join(args.data, "train")):
        raise SystemExit(f"error: no CIFAR-10 image folder at {args.data!r} (expected train/)")
    source = load_source(args.data, split="train", verify=False)
    augment = BYOLAugment(args.size, blur=bool(args.blur), seed=0)
    dataset = pretrain_dataset(
        source, augment, args.batch, args.load_size, seed=0, cache=bool(args.cache)
    ).repeat()
    batches = iter(dataset)
    next(batches)  # start-up and first batch are not counted
    if args.cache:
        # The cache fills during the first epoch; time the steady state after it.
        for _ in range(source.num_examples // args.batch):
            next(batches)
    images_per_second = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for _ in range(args.batches):
            view1, _, _ = next(batches)
        images_per_second.append(args.batches * int(view1.shape[0]) / (time.perf_counter() - start))
    config = {k: getattr(args, k) for k in ("size", "load_size", "blur", "batch", "batches", "threads", "cache")}
    return report.emit("input_pipeline", config, images_per_second, "images/s")


def stages(args):
    """Seconds per batch of every stage of one view, each in its own `tf.function` (graph, no XLA)."""
    import statistics

    import numpy as np

    from byol_keras import augment as aug

    report.set_threads(args.threads)
    view = aug.BYOLView(args.size, blur_prob=1.0 if args.blur else 0.0, solarize_prob=0.2, seed=0)
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (args.batch, args.load_size, args.load_size, 3), np.uint8))
    transform = view.sample_transform(images)
    cropped = view.apply_transform(images, {**transform, "jitter": tf.zeros_like(transform["jitter"])})
    unit = cropped / 255.0
    blur = aug.gaussian_blur_matrix(transform["blur_sigma"], args.size, view.blur_kernel_size)

    def crop():
        return view.apply_transform(images, {**transform, **{k: tf.zeros_like(transform[k]) for k in ("jitter", "grayscale", "blur", "solarize")}})

    candidates = {
        "sample_transform": lambda: view.sample_transform(images),
        "crop_flip_resize": crop,
        "color_jitter": lambda: aug.color_jitter(unit, transform["brightness"], transform["contrast"], transform["saturation"], transform["hue"], transform["jitter_order"]),
        "grayscale": lambda: view.grayscale(cropped),
        "blur": lambda: aug.separable_transform(cropped, blur, blur),
        "solarize": lambda: view.solarize(cropped),
        "normalize": lambda: aug.normalize(cropped),
        "whole_view": lambda: view(images),
    }
    results = {}
    for name, fn in candidates.items():
        fn = tf.function(fn)
        tf.nest.map_structure(lambda t: t.numpy(), fn())
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            for _ in range(args.batches):
                out = fn()
            tf.nest.map_structure(lambda t: t.numpy(), out)
            times.append((time.perf_counter() - start) / args.batches * 1000.0)
        results[name] = round(statistics.median(times), 2)
    config = {k: getattr(args, k) for k in ("size", "load_size", "blur", "batch", "threads")}
    report.emit("augment_stages_ms_per_batch", config, [results["whole_view"]], "ms/batch (whole view)", stages=results)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=report.DEFAULT_CIFAR)
    parser.add_argument("--size", type=int, default=32, help="side of the views")
    parser.add_argument("--load-size", dest="load_size", type=int, default=32,
                        help="side the decoded images are brought to before augmenting (CIFAR's own 32)")
    parser.add_argument("--blur", type=int, default=0, choices=(0, 1), help="the paper's blur (view 1: p=1, view 2: p=0.1)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20, help="batches per timed run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=int, default=0, choices=(0, 1))
    parser.add_argument("--stages", action="store_true", help="time each augmentation stage instead")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    stages(arguments) if arguments.stages else run(arguments)
