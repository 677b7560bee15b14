"""Make the pictures of docs/ from real data and a real run.

    python -m benchmarks.figures views                       # docs/views.png from ../shared/data/cifar10
    python -m benchmarks.figures photo-views                 # docs/photo_views.png: windows on a 4:3 photo
    python -m benchmarks.figures knn runs/quality-lightly ...   # docs/knn_curve.png from runs' history.json
    python -m benchmarks.figures knn runs/quality-lightly-tv runs/peer-quality-seed0.log   # with the peer's curve

`views`: eight CIFAR-10 test images (one per class, first eight classes), each with the two BYOL views
the pretraining pipeline makes of it (32 px, blur off, as the quality benchmark), un-normalised.
`photo-views`: one CIFAR-10 test image upscaled to a 400x300 JPEG (a photo's size and shape), the crop windows
that `pretrain_dataset` draws on it for eight pairs of views (224 px, the paper's crop law, torchvision style),
drawn on the photo, and the crops themselves as the pipeline cuts and resizes them (before the colour stages).
`knn`: kNN top-1 on the CIFAR-10 test split after every epoch of the quality benchmark runs
(`benchmarks/quality.py`), with the random-initialised floor at epoch 0; a file instead of a run
directory is the output of `benchmarks/peer_quality.py` (lightly's curve, dashed).
"""

import argparse
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def views_figure(data, out, seed=0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from byol_keras.preprocessing import IMAGENET_MEAN, IMAGENET_STD
    from byol_keras.views import BYOLAugment
    from byol_keras.eval_data import load_arrays
    from byol_keras.sources import load_source

    source = load_source(data, split="test")
    images, labels = load_arrays(source, 32, limit_per_class=1)
    images, labels = images[:8], labels[:8]
    view1, view2 = BYOLAugment(32, blur=False, seed=seed)(images)

    def show(x):
        return np.clip(np.asarray(x) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN), 0, 1)

    fig, axes = plt.subplots(3, len(images), figsize=(1.3 * len(images), 4.2))
    for j in range(len(images)):
        for i, (row, title) in enumerate(((images[j] / 255.0, "image"), (show(view1[j]), "view 1"), (show(view2[j]), "view 2"))):
            axes[i, j].imshow(row, interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if j == 0:
                axes[i, j].set_ylabel(title)
        axes[0, j].set_title(source.class_names[labels[j]], fontsize=8)
    fig.suptitle("BYOL views (view 1: blur p=1 → off at 32 px, no solarize; view 2: solarize p=0.2)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


def photo_views_figure(data, out, seed=0, pairs=6):
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from byol_keras import data as pipeline
    from byol_keras.views import BYOLAugment

    folder = os.path.join(data, "test", "cat")
    with Image.open(os.path.join(folder, sorted(os.listdir(folder))[0])) as image:
        photo = image.convert("RGB").resize((400, 300), Image.BICUBIC)
    path = os.path.join(tempfile.mkdtemp(), "photo.jpg")
    photo.save(path, quality=90)
    views = BYOLAugment(224, seed=seed).views
    keys = tf.data.Dataset.random(seed=seed).batch(2).take(pairs)
    rows = (pairs + 1) // 2
    fig = plt.figure(figsize=(11, 1.35 * rows + 0.6))
    grid = fig.add_axes([0.045, 0.08, 0.47, 0.82])
    grid.imshow(np.asarray(photo))
    colours = plt.cm.tab10(np.arange(pairs) % 10)
    for j, key in enumerate(keys):
        windows = pipeline._view_windows(300, 400, key, views)
        crops = pipeline._crop_views_from_file(tf.constant(path), key, views)
        for i, (window, crop) in enumerate(zip(windows, crops)):
            y, x, h, w = (int(v) for v in window)
            grid.add_patch(plt.Rectangle((x, y), w, h, fill=False, lw=2, ls="-" if i == 0 else "--", color=colours[j]))
            ax = fig.add_subplot(rows, 4, 4 * (j // 2) + 2 * (j % 2) + i + 1)
            ax.set_position([0.53 + 0.115 * (2 * (j % 2) + i), 0.9 - (j // 2 + 1) * 0.84 / rows, 0.105, 0.84 / rows - 0.02])
            ax.imshow(np.asarray(crop))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"pair {j + 1}, view {i + 1}", fontsize=7)
            for spine in ax.spines.values():
                spine.set_color(colours[j])
                spine.set_linewidth(2)
    grid.set_xticks([0, 100, 200, 300, 400])
    grid.set_yticks([0, 100, 200, 300])
    fig.suptitle("Crop windows drawn on a whole 400×300 photo (solid: view 1, dashed: view 2) and the 224-px crops "
                 "the pipeline cuts from them", fontsize=9)
    fig.savefig(out, dpi=70)
    print(f"wrote {out}")


def knn_figure(run_dirs, out, references=()):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    for run_dir in run_dirs:
        label = None
        if "=" in run_dir and os.path.exists(run_dir.rsplit("=", 1)[1]):  # LABEL=PATH
            label, run_dir = run_dir.rsplit("=", 1)
        if os.path.isfile(run_dir):  # the peer's output, `benchmarks/peer_quality.py > FILE`
            curve, label = peer_curve(run_dir, label)
            ax.plot(range(len(curve)), curve, marker="s", markersize=3, linestyle="--", label=label)
            continue
        with open(os.path.join(run_dir, "history.json")) as f:
            history = json.load(f)
        curve = [history["knn_top1_random_init"]] + history["knn_top1"]
        name = os.path.basename(os.path.normpath(run_dir)).removeprefix("quality-")
        ax.plot(range(len(curve)), curve, marker="o", markersize=3, label=label or f"byol_keras, {name}")
    last_epoch = ax.dataLim.x1  # the longest curve's last epoch
    for reference in references:
        label, value = reference.rsplit("=", 1)
        ax.axhline(float(value), color="grey", linestyle="--", linewidth=1)
        # Labelled at the right end, under the line: the curves crowd the left.
        ax.annotate(f"{label} {float(value):.4f}", (last_epoch, float(value)), textcoords="offset points",
                    xytext=(0, -10), ha="right", fontsize=8, color="dimgrey")
    ax.set_xlabel("epoch")
    ax.set_ylabel("kNN top-1 (CIFAR-10 test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")  # the curves rise from the left: that corner stays empty
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


def peer_curve(path, label=None):
    """kNN per epoch (epoch 0 = random init) from `peer_quality.py`'s output, finished or not."""
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.startswith("{")]
    summaries = [line for line in lines if "curve" in line]
    if summaries:
        summary = summaries[-1]
        return summary["curve"], label or f"{summary['peer']} (PyTorch), seed {summary['seed']}"
    # A resumed run (`--checkpoint`) may print an epoch twice if it was killed between printing and saving.
    epochs = {line["epoch"]: line["knn_top1"] for line in lines if "knn_top1" in line}
    curve = [epochs[epoch] for epoch in sorted(epochs)]
    return curve, (label or "lightly (PyTorch)") + f" (stopped after epoch {len(curve) - 1})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("figure", choices=("views", "photo-views", "knn"))
    parser.add_argument("runs", nargs="*",
                        help="run directories, or peer_quality.py output files (knn); LABEL=PATH names a curve")
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "cifar10"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--reference", action="append", default=[], metavar="LABEL=VALUE",
                        help="a dashed horizontal line (knn), e.g. 'lightly, 10 epochs=0.3474'; repeatable")
    args = parser.parse_args(argv)
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    if args.figure == "views":
        views_figure(args.data, args.out or os.path.join(ROOT, "docs", "views.png"))
    elif args.figure == "photo-views":
        photo_views_figure(args.data, args.out or os.path.join(ROOT, "docs", "photo_views.png"))
    else:
        if not args.runs:
            raise SystemExit("error: give at least one run directory with a history.json")
        knn_figure(args.runs, args.out or os.path.join(ROOT, "docs", "knn_curve.png"), args.reference)


if __name__ == "__main__":
    main()
