"""A photo-sized, non-square JPEG folder for the 224-px pipeline figures, made from the CIFAR-10 folder.

    python -m benchmarks.photos /tmp/photos --per-class 300          # 3,000 JPEGs, 400x300, quality 90
    python -m benchmarks.photos /tmp/mixed --per-class 300 --mixed  # sizes 300-640 px a side, any aspect

Users bring photographs hundreds of pixels a side and rarely square; CIFAR-10's 32-px squares hide the
cost of decoding and the geometry of crops. Each CIFAR-10 training image is upscaled (bicubic, Pillow) to
`--width` x `--height` (with `--mixed`, each to its own width and height drawn between 300 and 640 px, seed 0)
and saved as a JPEG of `--quality`, in the same class folders. Nothing is committed:
the folder goes wherever the command says (a temporary one), and a folder that already holds the requested
files is reused as it is.
"""

import argparse
import os

from benchmarks import report


def make_photos(destination, source=None, per_class=300, width=400, height=300, quality=90, sizes=None):
    """Write `per_class` upscaled JPEGs per class under `destination/<class>/`; returns `destination`.

    Args:
        destination: str, output folder (created).
        source: str or None, a CIFAR-10 `train` folder of class sub-folders. Defaults to
            `../shared/data/cifar10/train` beside the repository.
        per_class: int, images per class (the first ones in file-name order).
        width, height: int, output size in pixels.
        quality: int, JPEG quality.
        sizes: None, or a function `(class index, image index) -> (width, height)` replacing `width` and `height`.

    Returns:
        str, `destination`.
    """
    from PIL import Image

    source = source or os.path.join(report.DEFAULT_CIFAR, "train")
    if not os.path.isdir(source):
        raise SystemExit(f"error: no image folder of classes at {source!r}")
    for class_index, name in enumerate(sorted(os.listdir(source))):
        folder = os.path.join(source, name)
        if not os.path.isdir(folder):
            continue
        out = os.path.join(destination, name)
        os.makedirs(out, exist_ok=True)
        for index, filename in enumerate(sorted(os.listdir(folder))[:per_class]):
            target = os.path.join(out, os.path.splitext(filename)[0] + ".jpg")
            if os.path.exists(target):
                continue
            with Image.open(os.path.join(folder, filename)) as image:
                size = (width, height) if sizes is None else sizes(class_index, index)
                photo = image.convert("RGB").resize(size, Image.BICUBIC)
            photo.save(target + ".tmp", format="JPEG", quality=quality)
            os.replace(target + ".tmp", target)
    return destination


def make_mixed_photos(destination, source=None, per_class=300, low=300, high=640, quality=90, seed=0):
    """As `make_photos`, each image to its own width and height drawn uniformly in [`low`, `high`] (seeded)."""
    import numpy as np

    def sizes(class_index, index):
        rng = np.random.default_rng([seed, class_index, index])
        return tuple(int(x) for x in rng.integers(low, high + 1, size=2))

    return make_photos(destination, source, per_class, quality=quality, sizes=sizes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("destination")
    parser.add_argument("--source", help="CIFAR-10 train folder (default: ../shared/data/cifar10/train)")
    parser.add_argument("--per-class", dest="per_class", type=int, default=300)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--height", type=int, default=300)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--mixed", action="store_true", help="sizes drawn between 300 and 640 px a side")
    args = parser.parse_args(argv)
    if args.mixed:
        make_mixed_photos(args.destination, args.source, args.per_class, quality=args.quality)
    else:
        make_photos(args.destination, args.source, args.per_class, args.width, args.height, args.quality)
    print(args.destination)


if __name__ == "__main__":
    main()
