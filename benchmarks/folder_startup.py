"""A folder's start-up: what opening an image folder costs before the first step, in ms a file.

    python -m benchmarks.folder_startup --files 2000           # 2,000 JPEGs of 400x300
    python -m benchmarks.folder_startup --folder /tmp/photos20000 --runs 2   # any folder, as it is

Makes (or reuses) a folder of `--files` 400x300 JPEGs (CIFAR-10 images upscaled, `benchmarks.photos`, in a
temporary folder; nothing is committed) and times, alternately, the folder opened as `byol-pretrain` opens it
(`byol_keras.data.run_source`), as `load_source(folder)` opens it with its defaults (both: every file's header
read, nothing decoded) and with `verify=True` (every file decoded once). The files are in the OS's page cache after the first run (they
were just written): the figure is the CPU's cost, not a cold disk's. Prints one JSON line per way.
"""

import argparse
import os
import tempfile
import time

from benchmarks import report

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="number of JPEGs (a multiple of 10)")
    parser.add_argument("--folder", help="an image folder to open as it is, instead of making photos")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from benchmarks.photos import make_photos
    from byol_keras.data import run_source
    from byol_keras.sources import load_source

    report.set_threads(args.threads)
    folder = args.folder or make_photos(os.path.join(tempfile.gettempdir(), f"byol_keras_startup_{args.files}"),
                                        per_class=args.files // 10)
    config = {"data": folder, "train_split": "train", "data_dir": None, "max_pixels": None, "limit_per_class": None}
    ways = {"byol-pretrain (headers)": lambda: run_source(config), "load_source(folder)": lambda: load_source(folder),
            "load_source(folder, verify=True)": lambda: load_source(folder, verify=True)}
    load_source(folder)  # files in the page cache
    seconds = {name: [] for name in ways}
    for _ in range(args.runs):
        for name, open_folder in ways.items():
            start = time.perf_counter()
            source = open_folder()
            seconds[name].append(time.perf_counter() - start)
    for name, values in seconds.items():
        report.emit("folder_startup", {"way": name, "files": source.num_examples, "threads": args.threads},
                    [1000.0 * v / source.num_examples for v in values], "ms/file")


if __name__ == "__main__":
    main()
