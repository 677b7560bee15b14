"""What each path of the pretraining pipeline costs, for images of one size against the views' side.

    python -m benchmarks.paths                                   # the grid behind `choose_path` (about 10 min)
    python -m benchmarks.paths --cases 400x300:224 256x256:224   # some cases only

Not a user's path: this benchmark forces each of the paths `pretrain_dataset(..., path=...)` can take, on the
same folder of same-size JPEGs (CIFAR-10 images upscaled, `benchmarks.photos`, in a temporary folder), with
the views of `BYOLAugment(view, blur=view >= 96)`:

- `native`: decoded once, cached, whole batches cut and resized by matrix products;
- `per_image_cached`: decoded once, cached, each view's window sliced and resized per image;
- `per_image_files`: the files read every epoch, a JPEG's windows decoded alone (`decode_and_crop_jpeg`).

Each round runs the three in turn, one alive at a time: an untimed epoch (the cache filled, the buffers in
their steady state), then `--batches` batches timed; the rounds alternate, so all three see the same load. Prints one JSON line per case: images/s
(pairs of views) of each path, and which path `choose_path` takes there (`default`).
"""

import argparse
import json
import os
import tempfile
import time

from benchmarks import report

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_CASES = ("32x32:32", "64x64:32", "96x96:96", "128x128:96", "160x160:96", "192x192:96",
                 "224x224:224", "256x256:224", "400x300:224")
PATHS = (("native", "native", True), ("per_image_cached", "per_image", True), ("per_image_files", "per_image", False))


def run_case(case, args):
    from benchmarks.photos import make_photos
    from byol_keras.views import BYOLAugment
    from byol_keras.data import choose_path, pretrain_dataset
    from byol_keras.sources import load_source

    size, view = case.split(":")
    width, height = (int(x) for x in size.split("x"))
    view = int(view)
    folder = make_photos(os.path.join(args.folder, f"{width}x{height}"), per_class=args.per_class,
                         width=width, height=height)
    source = load_source(folder)
    augment = BYOLAugment(view, blur=view >= 96, seed=0)
    datasets = {name: pretrain_dataset(source, augment, args.batch, seed=0, cache=cache, path=path, repeat=True)
                for name, path, cache in PATHS}
    runs = {name: [] for name, _, _ in PATHS}
    for _ in range(args.rounds):
        for name, _, _ in PATHS:
            # One pipeline alive at a time (another's workers would fill its buffers meanwhile); an epoch first,
            # untimed: the cache filled and the buffers in their steady state.
            batches = iter(datasets[name])
            for _ in range(source.num_examples // args.batch + 1):
                next(batches)
            start = time.perf_counter()
            for _ in range(args.batches):
                next(batches)[0].numpy()
            runs[name].append(round(args.batches * args.batch / (time.perf_counter() - start), 1))
            del batches
    result = {
        "benchmark": "pipeline_paths",
        "case": case,
        "side_ratio": round(max(width, height) / view, 3),
        "default": choose_path(source, view),
        "images_per_second": {name: report.summary(values) for name, values in runs.items()},
        "config": {"batch": args.batch, "batches": args.batches, "rounds": args.rounds, "images": source.num_examples,
                   "blur": view >= 96},
        "onednn": report.onednn.onednn_state(),
        "machine": report.machine(),
    }
    print(json.dumps(result), flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES), help="WIDTHxHEIGHT:VIEW ...")
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "byol_keras_path_photos"),
                        help="where the photos are made (or reused); nothing is committed")
    parser.add_argument("--per-class", dest="per_class", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    report.set_threads(args.threads)
    for case in args.cases:
        run_case(case, args)


if __name__ == "__main__":
    main()
