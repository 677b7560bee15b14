"""Input-pipeline throughput: both BYOL views from an image folder, decoding included, as `byol-pretrain` builds them.

    python -m benchmarks.pipeline --size 32                            # CIFAR-10's 32-px JPEGs (no blur: the preset's)
    python -m benchmarks.pipeline --size 96                            # 96 px with the paper's blur
    python -m benchmarks.pipeline --photos --size 224                  # 400x300 photos (made here), 224 px
    python -m benchmarks.pipeline --mixed --size 224                   # photos of mixed sizes, 224 px
    python -m benchmarks.pipeline --photos --size 224 --stages         # where each millisecond goes
  Not the user's path (named `input_pipeline_not_default`, with what differs in `not_default`):
    python -m benchmarks.pipeline --photos --size 224 --views-on device  # the CPU part of device views
    python -m benchmarks.pipeline --photos --size 224 --off jitter     # the pipeline without a stage
    python -m benchmarks.pipeline --photos --size 224 --path native    # a forced path (native, per_image)
    python -m benchmarks.pipeline --photos --size 224 --cache 0        # files decoded every epoch
    python -m benchmarks.pipeline --photos --size 224 --views-on device --jpeg whole  # one decode, two crops

The data a user's command reads: the configuration `byol-pretrain --preset P --data FOLDER --image-size SIZE
--batch-size BATCH --seed 0` resolves (P: `--preset`, by default imagenet-resnet50 at 224 px, stl10-resnet18 at
96, cifar10-resnet18 otherwise), and the same two calls as its run (`byol_keras.data.run_source`, `run_views`):
`load_source` with its defaults, the preset's `BYOLAugment`, `pretrain_dataset`'s endless stream with every
default (its path and cache among them). `--data` is the CIFAR-10 folder by default; `--photos` makes a folder
of CIFAR-10 images upscaled to 400x300 JPEGs of quality 90 and `--mixed` one of sizes between 300 and 640 px a
side, any aspect (`benchmarks.photos`, in a temporary folder unless `--photos-dir` names one; nothing is
committed). The first epoch (start-up, tracing, a cache's filling) is not timed; then each run is `--batches`
batches timed with `time.perf_counter`. Prints one JSON line: images/second (pairs of views per second, the
peer's unit), with the path taken and the process's peak memory.

`--stages` times the pieces instead, on in-memory files and one batch: per image (one core, ms per image,
each a `tf.function` call whose own cost is the `empty_call` row) reading the JPEG's header, decoding it
whole, decoding just the two views' windows, resizing the two crops; per batch (ms per batch, both cores) each
stage after the crop (flip, colour jitter, grayscale, blur of view 1 (every image) and of view 2 (10 %),
solarize, normalise) and one whole view after the crop, XLA-compiled as the pipeline runs it.
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
    if args.photos or args.mixed:
        from benchmarks.photos import make_mixed_photos, make_photos

        if args.mixed:
            destination = args.photos_dir or os.path.join(tempfile.gettempdir(), "byol_keras_photos_mixed_q90")
            return make_mixed_photos(destination, per_class=args.photos_per_class)
        destination = args.photos_dir or os.path.join(tempfile.gettempdir(), "byol_keras_photos_400x300_q90")
        return make_photos(destination, per_class=args.photos_per_class)
    folder = os.path.join(args.data, "train") if os.path.isdir(os.path.join(args.data, "train")) else args.data
    if not os.path.isdir(folder):
        raise SystemExit(f"error: no image folder at {args.data!r}")
    return folder


# The preset whose views a figure at each size uses (the presets' own sides): the paper's at 224 and 96 px.
PRESET_FOR_SIZE = {224: "imagenet-resnet50", 96: "stl10-resnet18", 32: "cifar10-resnet18"}


def command_line(args, folder):
    """The `byol-pretrain` flags whose run reads the data this benchmark measures."""
    preset = args.preset or PRESET_FOR_SIZE.get(args.size, "cifar10-resnet18")
    return ["--preset", preset, "--data", folder, "--image-size", str(args.size), "--batch-size", str(args.batch),
            "--seed", "0"]


def not_default(args, config):
    """What this run changes from the user's path (empty: the data `byol-pretrain` builds for the same flags)."""
    changes = []
    if args.blur is not None and bool(args.blur) != config["blur"]:
        changes.append(f"blur={bool(args.blur)}")
    changes += [f"{name}={getattr(args, name)!r}" for name in ("cache", "path") if getattr(args, name) is not None]
    if args.views_on != "data":
        changes.append(f"views_on={args.views_on!r}")
    if args.jpeg != "windows":
        changes.append(f"jpeg={args.jpeg!r}")
    changes += [f"off={stage}" for stage in args.off]
    return changes


def build(args):
    """`(config, source, augment, dataset, changes)`: the data as `byol-pretrain` builds it for these flags.

    The configuration is the command line's own (`resolve_config(parse_args(command_line(...)))`) and the data
    comes from the same two calls as a run's (`byol_keras.data.run_source`, `run_views`); the options of
    `not_default` (measurements of other paths) are applied on top and named in the output.
    """
    from byol_keras import data
    from byol_keras.cli.pretrain import parse_args as pretrain_args
    from byol_keras.cli.pretrain import resolve_config

    config = resolve_config(pretrain_args(command_line(args, image_folder(args))))
    changes = not_default(args, config)
    if args.blur is not None:
        config["blur"] = bool(args.blur)
    off = {"jitter": {"jitter_prob": 0.0}, "grayscale": {"grayscale_prob": 0.0}, "solarize": {"solarize_prob": 0.0},
           "flip": {"flip_prob": 0.0}, "blur": {}}
    config["augment"] = {**config["augment"], **{k: v for stage in args.off for k, v in off[stage].items()}}
    if "blur" in args.off:
        config["blur"] = False
    options = {"views_on": args.views_on}
    if args.cache is not None:
        options["cache"] = bool(args.cache)
    if args.path is not None:
        options["path"] = args.path
    data.DECODE_JPEG_WINDOWS = args.jpeg == "windows"
    source = data.run_source(config)
    augment, dataset = data.run_views(config, source, **({} if options == {"views_on": "data"} else options))
    return config, source, augment, dataset, changes


def run(args):
    from byol_keras.data import choose_path

    report.set_threads(args.threads)
    config, source, augment, dataset, changes = build(args)
    batches = iter(dataset)
    next(batches)  # start-up and first batch are not counted
    # A cache fills during the first epoch: time the steady state after it (a long run's), whichever path.
    for _ in range(source.num_examples // args.batch):
        next(batches)
    images_per_second = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for _ in range(args.batches):
            first = next(batches)[0]
        images_per_second.append(args.batches * int(first.shape[0]) / (time.perf_counter() - start))
    settings = {k: getattr(args, k) for k in ("size", "batch", "batches", "threads", "photos", "mixed")}
    settings.update(preset=command_line(args, source.name)[1], blur=config["blur"], images=source.num_examples,
                    path=args.path or choose_path(source, args.size), user_path=not changes, not_default=changes)
    # A figure of another path than the user's says so in its name.
    name = "input_pipeline" if not changes else "input_pipeline_not_default"
    return report.emit(name, settings, images_per_second, "images/s")


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

    from byol_keras import preprocessing
    from byol_keras.views import BYOLAugment, colour
    from byol_keras import data, decoding

    report.set_threads(args.threads)
    folder = image_folder(args)
    paths = sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files)[: args.batch]
    contents = [open(path, "rb").read() for path in paths]
    augment = BYOLAugment(args.size, blur=args.blur != 0, seed=0)
    views = augment.views
    keys = tf.constant(np.random.default_rng(0).integers(0, 2**31, (len(contents), 2)), tf.int64)

    def per_image(fn):
        fn = tf.function(fn)
        return lambda: [fn(tf.constant(c), keys[i]) for i, c in enumerate(contents)]

    def windows(c, key):
        shape = tf.image.extract_jpeg_shape(c)
        return data._view_windows(shape[0], shape[1], key, views)

    def decode_windows(c, key):
        return [tf.io.decode_and_crop_jpeg(c, w, channels=3, dct_method=decoding.JPEG_DCT_METHOD) for w in windows(c, key)]

    crops = [decode_windows(tf.constant(c), keys[i]) for i, c in enumerate(contents)]
    resize = tf.function(lambda crop: data._resize_crop(crop, views[0]), reduce_retracing=True)
    results = {
        "empty_call": _median_ms(per_image(lambda c, key: c), args.runs, len(contents)),
        "header_and_windows": _median_ms(per_image(windows), args.runs, len(contents)),
        "decode_whole_image": _median_ms(
            per_image(lambda c, key: tf.io.decode_jpeg(c, channels=3, dct_method=decoding.JPEG_DCT_METHOD)),
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
        "color_jitter": lambda: colour.color_jitter(
            planar, transform["brightness"], transform["contrast"], transform["saturation"],
            transform["hue"], transform["jitter_order"], channel_axis=1),
        "grayscale": lambda: colour.grayscale(planar, channel_axis=1),
        "blur_view1": lambda: view._blur(planar, tf.ones_like(transform["blur"]), transform["blur_sigma"]),
        "blur_view2": lambda: views[1]._blur(planar, views[1].sample_transform(batch)["blur"], transform["blur_sigma"]),
        "solarize": lambda: colour.solarize(planar, 0.5),
        "normalize": lambda: preprocessing.normalize(batch),
        "whole_view_after_crop": lambda: view.apply_after_crop(batch, transform),
    }
    per_batch = {
        f"{name}_ms_per_batch": _median_ms(tf.function(fn, jit_compile=True), args.runs, 1)
        for name, fn in batched.items()
    }
    config = {k: getattr(args, k) for k in ("size", "blur", "batch", "threads", "photos", "mixed")}
    config["images"] = len(contents)
    report.emit("pipeline_stages", config, [per_batch["whole_view_after_crop_ms_per_batch"]],
                "ms/batch (one view after the crop)", stages={**single, **per_batch})


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=report.DEFAULT_CIFAR, help="folder of class sub-folders, or one with train/")
    parser.add_argument("--photos", action="store_true", help="read 400x300 JPEGs made from CIFAR-10 instead")
    parser.add_argument("--photos-dir", dest="photos_dir", help="where to make (or reuse) the photos")
    parser.add_argument("--mixed", action="store_true", help="read JPEGs of mixed sizes (300-640 px a side) instead")
    parser.add_argument("--photos-per-class", dest="photos_per_class", type=int, default=300)
    parser.add_argument("--size", type=int, default=32, help="side of the views")
    parser.add_argument("--preset", help="byol-pretrain's preset (default: imagenet-resnet50 at 224, stl10-resnet18 "
                                         "at 96, cifar10-resnet18 otherwise)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20, help="batches per timed run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    # Not the user's path: each of these measures something else, and the output says so.
    parser.add_argument("--blur", type=int, choices=(0, 1), help="the blur on (1) or off (0) (default: the preset's)")
    parser.add_argument("--cache", type=int, choices=(0, 1), help="force the cache of decoded images (default: auto)")
    parser.add_argument("--path", choices=("native", "per_image"), help="force a path (default: choose_path's)")
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
