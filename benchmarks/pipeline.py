"""Input-pipeline throughput: both BYOL views from an image folder, decoding included.

    python -m benchmarks.pipeline --size 32 --blur 0                   # CIFAR-10's 32-px JPEGs, no blur
    python -m benchmarks.pipeline --size 96 --blur 1                   # 96 px with the paper's blur
    python -m benchmarks.pipeline --photos --size 224 --blur 1         # 400x300 photos (made here), 224 px
    python -m benchmarks.pipeline --photos --size 224 --views-on device  # the CPU part of device views
    python -m benchmarks.pipeline --photos --size 224 --stages         # where each millisecond goes
    python -m benchmarks.pipeline --photos --size 224 --blur 1 --off jitter   # the pipeline without a stage
    python -m benchmarks.pipeline --photos --size 224 --views-on device --jpeg whole  # one decode, two crops

`byol_keras.data.pretrain_dataset` over an image folder of class sub-folders with `BYOLAugment` (the paper's
two views, Table 6), batch `--batch`. `--data` is the CIFAR-10 folder by default (32-px squares: the
native-size path); `--photos` makes a folder of CIFAR-10 images upscaled to 400x300 JPEGs of quality 90
(`benchmarks.photos`, in a temporary folder unless `--photos-dir` names one; nothing is committed) and
reads that instead (the per-image path: each view's window decoded from the whole photo). With
`--cache 0` (default) every batch decodes its files again, as the peer's DataLoader does; `--cache 1`
keeps decoded images in memory. `--views-on device` times the CPU's share when the views are finished
on an accelerator (decode, windows, resize). Each run is `--batches` batches timed with
`time.perf_counter`; the pipeline's start-up and first batch are not counted. Prints one JSON line:
images/second (pairs of views per second, the peer's unit), with the process's peak memory.

`--stages` times the pieces instead, on in-memory files and one batch: per image (one core, ms per image,
each a `tf.function` call whose own cost is the `empty_call` row) reading the JPEG's header, decoding it
whole, decoding just the two views' windows, resizing the two crops; per batch (ms per batch, both cores) each stage after the crop (flip, colour jitter, grayscale,
blur of view 1 (every image) and of view 2 (10 %), solarize, normalise) and one whole view after the crop,
XLA-compiled as the pipeline runs it.
"""

import argparse
import os
import statistics
import tempfile
import time

from benchmarks import report

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402


def image_folder(args):
    """The folder of class sub-folders to read: the CIFAR-10 train folder, or photos made from it."""
    if args.photos:
        from benchmarks.photos import make_photos

        destination = args.photos_dir or os.path.join(tempfile.gettempdir(), "byol_keras_photos_400x300_q90")
        return make_photos(destination, per_class=args.photos_per_class)
    folder = os.path.join(args.data, "train") if os.path.isdir(os.path.join(args.data, "train")) else args.data
    if not os.path.isdir(folder):
        raise SystemExit(f"error: no image folder at {args.data!r}")
    return folder


def run(args):
    from byol_keras.augment import BYOLAugment
    from byol_keras.data import load_source, native_size, pretrain_dataset

    from byol_keras import data

    report.set_threads(args.threads)
    data.DECODE_JPEG_WINDOWS = args.jpeg == "windows"
    source = load_source(image_folder(args), verify=bool(args.cache))
    off = {"jitter": {"jitter_prob": 0.0}, "grayscale": {"grayscale_prob": 0.0}, "solarize": {"solarize_prob": 0.0},
           "flip": {"flip_prob": 0.0}}
    overrides = {k: v for stage in args.off for k, v in off.get(stage, {}).items()}
    augment = BYOLAugment(args.size, blur=bool(args.blur) and "blur" not in args.off, seed=0, **overrides)
    dataset = pretrain_dataset(
        source, augment, args.batch, seed=0, cache=bool(args.cache), views_on=args.views_on
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
            first = next(batches)[0]
        images_per_second.append(args.batches * int(first.shape[0]) / (time.perf_counter() - start))
    config = {k: getattr(args, k) for k in ("size", "blur", "batch", "batches", "threads", "cache", "views_on", "photos", "jpeg", "off")}
    config["path"] = "native size" if native_size(source, args.size) else "per image"
    return report.emit("input_pipeline", config, images_per_second, "images/s")


def _median_ms(fn, repeats, per):
    fn()  # trace and compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
        times.append((time.perf_counter() - start) * 1000.0 / per)
    return round(statistics.median(times), 3)


def stages(args):
    """Milliseconds per image of the per-image stages and per batch of the batched ones."""
    import numpy as np

    from byol_keras import augment as aug
    from byol_keras import data

    report.set_threads(args.threads)
    folder = image_folder(args)
    paths = sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files)[: args.batch]
    contents = [open(path, "rb").read() for path in paths]
    augment = aug.BYOLAugment(args.size, blur=bool(args.blur), seed=0)
    views = augment.views
    keys = tf.constant(np.random.default_rng(0).integers(0, 2**31, (len(contents), 2)), tf.int64)

    def per_image(fn):
        fn = tf.function(fn)
        return lambda: [fn(tf.constant(c), keys[i]) for i, c in enumerate(contents)]

    def windows(c, key):
        shape = tf.image.extract_jpeg_shape(c)
        return data._view_windows(shape[0], shape[1], key, views)

    def decode_windows(c, key):
        return [tf.io.decode_and_crop_jpeg(c, w, channels=3, dct_method=data.JPEG_DCT_METHOD) for w in windows(c, key)]

    crops = [decode_windows(tf.constant(c), keys[i]) for i, c in enumerate(contents)]
    resize = tf.function(lambda crop: data._resize_crop(crop, views[0]), reduce_retracing=True)
    results = {
        "empty_call": _median_ms(per_image(lambda c, key: c), args.runs, len(contents)),
        "header_and_windows": _median_ms(per_image(windows), args.runs, len(contents)),
        "decode_whole_image": _median_ms(
            per_image(lambda c, key: tf.io.decode_jpeg(c, channels=3, dct_method=data.JPEG_DCT_METHOD)),
            args.runs, len(contents)),
        "decode_two_windows": _median_ms(per_image(decode_windows), args.runs, len(contents)),
        "resize_two_crops": _median_ms(lambda: [resize(c) for pair in crops for c in pair], args.runs, len(contents)),
    }
    single = {f"{name}_ms_per_image": value for name, value in results.items()}

    view = views[0]
    batch = tf.stack([data._resize_crop(pair[0], view) for pair in crops])
    transform = view.sample_transform(batch)
    # The view works channels first on [0, 1] (BYOLView._colour_blur_solarize): time the stages that way.
    planar = tf.transpose(tf.cast(batch, tf.float32), (0, 3, 1, 2)) / 255.0
    batched = {
        "cast_transpose_flip": lambda: tf.where(
            transform["flip"][:, None, None, None], tf.reverse(planar, [3]), planar),
        "color_jitter": lambda: aug.color_jitter(
            planar, transform["brightness"], transform["contrast"], transform["saturation"],
            transform["hue"], transform["jitter_order"], channel_axis=1),
        "grayscale": lambda: aug.grayscale(planar, channel_axis=1),
        "blur_view1": lambda: view._blur(planar, tf.ones_like(transform["blur"]), transform["blur_sigma"]),
        "blur_view2": lambda: views[1]._blur(planar, views[1].sample_transform(batch)["blur"], transform["blur_sigma"]),
        "solarize": lambda: aug.solarize(planar, 0.5),
        "normalize": lambda: aug.normalize(batch),
        "whole_view_after_crop": lambda: view.apply_after_crop(batch, transform),
    }
    per_batch = {
        f"{name}_ms_per_batch": _median_ms(tf.function(fn, jit_compile=True), args.runs, 1)
        for name, fn in batched.items()
    }
    config = {k: getattr(args, k) for k in ("size", "blur", "batch", "threads", "photos")}
    config["images"] = len(contents)
    report.emit("pipeline_stages", config, [per_batch["whole_view_after_crop_ms_per_batch"]],
                "ms/batch (one view after the crop)", stages={**single, **per_batch})


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=report.DEFAULT_CIFAR, help="folder of class sub-folders, or one with train/")
    parser.add_argument("--photos", action="store_true", help="read 400x300 JPEGs made from CIFAR-10 instead")
    parser.add_argument("--photos-dir", dest="photos_dir", help="where to make (or reuse) the photos")
    parser.add_argument("--photos-per-class", dest="photos_per_class", type=int, default=300)
    parser.add_argument("--size", type=int, default=32, help="side of the views")
    parser.add_argument("--blur", type=int, default=0, choices=(0, 1), help="the paper's blur (view 1: p=1, view 2: p=0.1)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20, help="batches per timed run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=int, default=0, choices=(0, 1))
    parser.add_argument("--views-on", dest="views_on", default="data", choices=("data", "device"))
    parser.add_argument("--jpeg", default="windows", choices=("windows", "whole"),
                        help="per-image path: decode each view's JPEG window (default) or the whole image once")
    parser.add_argument("--off", nargs="*", default=[], choices=("jitter", "blur", "grayscale", "solarize", "flip"),
                        help="switch these stages off in both views (what each costs in the whole pipeline)")
    parser.add_argument("--stages", action="store_true", help="time each stage instead")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    stages(arguments) if arguments.stages else run(arguments)
