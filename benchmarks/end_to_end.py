"""End to end: `fit` on the CIFAR-10 JPEG folder against `fit` on random inputs, same model, same process.

    python -m benchmarks.end_to_end                          # views made in tf.data (the default)
    python -m benchmarks.end_to_end --augment-on device      # views made inside the compiled step

ResNet-18 (CIFAR stem, width 64), paper heads, batch 128, 32 px, SGD with momentum; the defaults of
`resnet18` (fused BatchNorm) and `BYOL.compile` (`jit_compile="auto"`). One model is compiled once; then, `--runs` times, one epoch of `--steps`
steps on random views (the step-only figure of `step.py`) and one epoch on
`pretrain_dataset(load_source(cifar10/train), BYOLAugment(32, blur=False), 128, 32)` (decoding,
caching, shuffling, both views; the pipeline runs on the same two cores as the step). Alternating
the two inside one process makes each pair see the same machine load. Prints one JSON line: the
end-to-end images/second, the step-only images/second, and the per-pair ratio (target >= 0.9).
"""

import argparse
import os

from benchmarks import report
from benchmarks import step as step_benchmark  # after report: it sets the environment TensorFlow reads

import tensorflow as tf  # noqa: E402


def run(args):
    from byol_keras.preprocessing import normalize
    from byol_keras.views import BYOLAugment
    from byol_keras.data import pretrain_dataset
    from byol_keras.sources import load_source

    report.set_threads(args.threads)
    if not os.path.isdir(os.path.join(args.data, "train")):
        raise SystemExit(f"error: no CIFAR-10 image folder at {args.data!r} (expected train/)")
    source = load_source(args.data, split="train", verify=False)
    augment = BYOLAugment(32, blur=False, seed=0)
    model_args = argparse.Namespace(width=args.width, size=32, hidden=args.hidden, projection_dim=256, optimizer="sgd",
                                    jit="auto")
    if args.augment_on == "device":
        # The model makes the views; the dataset hands over uint8 images and labels.
        real = pretrain_dataset(source, None, args.batch, 32, seed=0).repeat()
        images = tf.random.stateless_uniform((args.batch, 32, 32, 3), (0, 0), 0, 256, tf.int32)
        synthetic = tf.data.Dataset.from_tensors((tf.cast(images, tf.uint8), tf.fill((args.batch,), -1))).repeat()
    else:
        real = pretrain_dataset(source, augment, args.batch, 32, seed=0).repeat()
        views = normalize(tf.random.stateless_uniform((2, args.batch, 32, 32, 3), (0, 0), 0, 255))
        # Same structure as the real batches (with labels), so both reuse one compiled step.
        synthetic = tf.data.Dataset.from_tensors((views[0], views[1], tf.fill((args.batch,), -1))).repeat()
    model = step_benchmark.build_model(model_args, augment=augment if args.augment_on == "device" else None)

    timer = step_benchmark.EpochTimer()
    # Warm-up: compiles the step and fills the pipeline (decoding, the cache's first pass is lazy).
    model.fit(synthetic, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=False)
    model.fit(real, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=False)
    step_only, end_to_end = [], []
    for _ in range(args.runs):
        for dataset, results in ((synthetic, step_only), (real, end_to_end)):
            timer.seconds.clear()
            model.fit(dataset, epochs=1, steps_per_epoch=args.steps, callbacks=[timer], verbose=0, shuffle=False)
            results.append(args.batch * args.steps / timer.seconds[0])
    ratios = [e / s for e, s in zip(end_to_end, step_only)]
    config = {"batch": args.batch, "size": 32, "width": args.width, "hidden": args.hidden, "threads": args.threads,
              "steps": args.steps, "augment_on": args.augment_on}
    return report.emit(
        "end_to_end", config, end_to_end, "images/s",
        step_only=report.summary(step_only),
        ratio_to_step_only=report.summary(ratios),
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=report.DEFAULT_CIFAR)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="steps per timed epoch")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--augment-on", dest="augment_on", choices=("data", "device"), default="data")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
