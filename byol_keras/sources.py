"""Image sources: TFDS names, image folders and the offline `digits` demo set, opened with `load_source`.

A `Source` is the records of a data set in a fixed order (file paths or images, with labels) and what is
known about them without decoding (count, classes, labels, image sizes, the files skipped); its `dataset`
decodes them. The pipelines that consume it: `byol_keras.data.pretrain_dataset` (the BYOL views),
`byol_keras.eval_data.load_arrays` (a kNN bank), `byol_keras.subsets.subset_per_class`.

Three kinds of source, all opened with `load_source`:

- a TFDS name: `cifar10`, `cifar100`, `stl10` (with its `unlabelled` split), `imagenette`,
  `imagenet2012` (optionally with a config, `imagenette/160px-v2`). The data must already be
  prepared in `data_dir`; nothing is ever downloaded here.
- a folder of images (searched recursively; `.jpg .jpeg .png .bmp .gif`, any case). Top-level
  sub-folders are classes, labelled `0..C-1` in sorted name order; images directly in the root of a
  flat folder are unlabelled (label `-1`). Files and folders whose names start with `.` are ignored
  (macOS writes `._name.jpg` files that are not images).
- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download), as RGB uint8
  upsampled (nearest) to `image_size` (32 by default), with a fixed train/test split.

Bad input is reported, never silently dropped and never fatal for the whole run:

- Every image file (and every TFDS image) is decoded by `byol_keras.decoding.decode_image`, the decoder
  the serving signatures use too: JPEGs with the accurate IDCT, as Pillow, and the size read from the
  header first. An image above `max_pixels` (default `DEFAULT_MAX_PIXELS`, Pillow's 89,478,485) is
  refused before anything is decoded, as an unreadable file is: a decompression bomb (a small file that
  declares a huge image) costs neither the memory nor the time of decoding it.
- A folder is opened from its files' headers (`verify=False`, the default): every file's format, size and pixel
  count are read from its first bytes (`byol_keras.decoding.file_image_header`; GIFs by `image_header`), nothing is
  decoded, at a tenth of a millisecond a file. Files that are no image, empty, cut before their header or
  above `max_pixels` are skipped now; they are listed in `Source.skipped` with the reason (the size and the
  limit for a refused image) and their number is reported right away with `warnings.warn`, naming a few of
  them. A file damaged behind a good header (a JPEG cut in its data) is found when a pipeline decodes it: it is
  skipped there (`tf.data`'s `ignore_errors`, a line of TensorFlow's log gives the decoder's error), warned
  about, and recorded in `Source.met_failures` (`DecodeFailures`: the count, and the files by name), which
  `byol-pretrain` counts in its summary. A finite pipeline gives its place to its first record again, so that
  its declared length (Keras' steps per epoch, a schedule's horizon) holds.
- With `verify=True` every file is also decoded once with the decoder the pipelines use, and the damaged ones
  are skipped and listed up front (TensorFlow 2.21 refuses truncated JPEGs, even one that only lacks its
  end-of-image marker, rather than returning a partly grey image), at the cost of decoding the folder twice
  (1-3 ms a 400x300 JPEG on 2 cores). Either way the sizes are known, so the pipeline's path
  (`byol_keras.data.choose_path`) does not depend on `verify`.
- Readable images are converted to RGB uint8 (`channels=3`, the default): grayscale is replicated to three
  channels, palette images are expanded, 16-bit PNGs keep their high byte, the alpha channel of RGBA images is dropped
  (not composited) and animated GIFs give their first frame. TensorFlow decodes palette (<= 8-bit)
  BMPs to wrong colours without any error, so those few files are decoded with Pillow instead.
  With `channels=1` (X-rays, scans, microscopy kept as one channel) every image is then its luma
  (`byol_keras.decoding.to_channels`): a grayscale file its own pixels, an RGB file in the folder its ITU-R 601
  luma, as the export's signatures convert what they receive.
- An image smaller than the requested size is upscaled (bicubic), not dropped; a warning counts them,
  once per source and size, when the sizes are known (folders, fixed-size TFDS sets, digits).
- An empty folder, a folder with no decodable image, an unknown TFDS name and a TFDS set that is not
  prepared are errors that name the path or the name.

Example:

>>> source = load_source("digits", split="train", image_size=32)
>>> source.num_examples, source.num_classes, source.labels.dtype.name
(1437, 10, 'int32')
"""

import dataclasses
import os
import re
import warnings

import numpy as np
import tensorflow as tf

from byol_keras.decoding import DEFAULT_MAX_PIXELS, check_channels, check_max_pixels, decode_image, file_image_header
from byol_keras.decoding import image_header
from byol_keras.validation import check_positive_int

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

# TFDS datasets this module knows how to read (image + optional label features).
TFDS_NAMES = ("cifar10", "cifar100", "stl10", "imagenette", "imagenet2012")

# `digits` split: a fixed permutation (seed 0) of the 1,797 images; the first 360 (20%) are the test
# split, the other 1,437 the train split. Fixed so that results stay comparable between runs.
DIGITS_SEED = 0
DIGITS_TEST_SIZE = 360


@dataclasses.dataclass(eq=False)
class Source:
    """An opened image source: records in a fixed order plus what is known about them.

    Build it with `load_source`. `dataset` gives the decoded `(image, label)` pairs: image a uint8
    `(height, width, channels)` tensor (sizes may differ between images), label an int32 scalar, `-1` when
    the example has no label.

    Attributes:
        name: str, the TFDS name (with split), `"digits:<split>"` or the folder path.
        num_examples: int, number of records (skipped files excluded).
        num_classes: int, number of classes; 0 for an unlabelled source.
        class_names: tuple of str, class `i` is `class_names[i]`.
        labels: int32 numpy array `(num_examples,)` of record labels when known without decoding
            (folders, digits), else None.
        image_sizes: int numpy array `(num_examples, 2)` of `(height, width)` when known, else None.
        skipped: tuple of `(path, reason)` for the files that were found but could not be decoded.
        max_pixels: int, the largest image (in pixels) that is decoded; larger ones are skipped.
        channels: int, the decoded images' channels: 3 (RGB) or 1 (grayscale).
    """

    name: str
    num_examples: int
    num_classes: int
    class_names: tuple
    labels: object = dataclasses.field(default=None, repr=False)
    image_sizes: object = dataclasses.field(default=None, repr=False)
    skipped: tuple = ()
    max_pixels: int = DEFAULT_MAX_PIXELS
    channels: int = 3
    # The records (file paths or images, with labels) and the function turning one record into an
    # `(image, label)` pair. Kept apart so that cheap records can be shuffled before decoding.
    records: tf.data.Dataset = dataclasses.field(default=None, repr=False)
    decode: object = dataclasses.field(default=None, repr=False)
    # True when records are file paths: shuffling those is cheap, so it happens before decoding.
    file_backed: bool = dataclasses.field(default=False, repr=False)
    # True: the pipelines declare their length (Keras' steps per epoch); records that fail to decode when met leave
    # their places to the first records again.
    exact_count: bool = dataclasses.field(default=True, repr=False)
    # The records the pipelines skipped because they failed to decode when met (after the scan): `DecodeFailures`.
    met_failures: object = dataclasses.field(default=None, repr=False)
    _warned_sizes: set = dataclasses.field(default_factory=set, repr=False)

    def __post_init__(self):
        if self.met_failures is None:
            self.met_failures = DecodeFailures(self.name)

    @property
    def dataset(self):
        """`tf.data.Dataset` of `(uint8 image (h, w, channels), int32 label)` in the source's fixed order."""
        return decoded_dataset(self, self.records)


def load_source(source, split="train", data_dir=None, image_size=None, verify=False, max_pixels=DEFAULT_MAX_PIXELS,
                channels=3):
    """Open a TFDS dataset, an image folder or the `digits` demo set.

    Args:
        source: str. `"digits"`, one of `TFDS_NAMES` (optionally `name/config`), or the path of an
            image folder. Any string that is not `"digits"` or a TFDS name is taken as a path.
        split: str. For TFDS any split expression of the dataset (`"train"`, `"unlabelled"`,
            `"train+unlabelled"`, `"train[:10%]"`); for digits `"train"`, `"test"` or `"all"`.
            For a folder that has a sub-folder named `split` (`cifar10/train`, `cifar10/test`),
            that sub-folder is read; otherwise the folder itself. Defaults to `"train"`.
        data_dir: str or None, TFDS data directory (TFDS default `~/tensorflow_datasets` when None).
            Only for TFDS names. Defaults to None.
        image_size: int or None. For digits, the side the 8x8 images are upsampled to (32 when
            None). For the other sources, when given, the images smaller than it are counted and
            reported now (they will be upscaled). Defaults to None.
        verify: bool. False: a folder's files are checked from their headers, and a file damaged behind a good
            header is skipped (and counted) when a pipeline meets it. True: every file is also decoded once now,
            to skip and list the damaged ones up front (see the module docstring). Defaults to False.
        max_pixels: int, images (files or TFDS records) whose header declares more pixels are skipped
            without being decoded (a GIF counts all its frames). Defaults to `DEFAULT_MAX_PIXELS`
            (89,478,485, Pillow's decompression-bomb threshold). The TFDS sets of `TFDS_NAMES` hold no image
            near it; a TFDS image refused under a lower limit fails the epoch's length check, as a TFDS set's
            count is taken as exact.
        channels: 3 (RGB) or 1 (grayscale kept as one channel: each image's luma, see the module docstring).
            Defaults to 3.

    Returns:
        A `Source`.

    Raises:
        ValueError: unknown TFDS name or split, empty or wholly unreadable folder, bad arguments.
        FileNotFoundError: the TFDS dataset is not prepared in `data_dir`.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "`source` must be a TFDS name, 'digits' or a folder path. "
            f"Received: source={source!r} of type {type(source).__name__}"
        )
    if image_size is not None:
        check_positive_int("image_size", image_size)
    check_max_pixels(max_pixels)
    channels = check_channels(channels)
    if not isinstance(split, str):
        raise TypeError(f"`split` must be a str. Received: split={split!r}")
    source = os.fspath(source)
    if source == "digits":
        result = _load_digits(split, image_size or 32, channels)
    elif source.split("/")[0] in TFDS_NAMES:
        result = _load_tfds(source, split, data_dir, max_pixels, channels)
    else:
        with_split = os.path.join(source, split)
        result = _load_folder(with_split if os.path.isdir(with_split) else source, verify, max_pixels, channels)
    if image_size is not None:
        warn_small_images(result, image_size)
    return result


def warn_small_images(source, image_size):
    """Warn, once per source and size, how many images are smaller than `image_size` (upscaled).

    Does nothing when the image sizes are unknown (variable-size TFDS sets, unverified folders).

    Args:
        source: `Source`.
        image_size: int, the side the pipelines resize or crop to.

    Returns:
        int, the number of images whose shorter side is below `image_size` (0 when unknown).
    """
    if source.image_sizes is None or len(source.image_sizes) == 0:
        return 0
    small = int(np.sum(np.min(source.image_sizes, axis=1) < image_size))
    if small and image_size not in source._warned_sizes:
        source._warned_sizes.add(image_size)
        warnings.warn(
            f"{small} of {source.num_examples} images in {source.name} are smaller than "
            f"{image_size}x{image_size} pixels; they are upscaled (bicubic), not dropped.",
            stacklevel=3,
        )
    return small


def _load_digits(split, image_size, channels=3):
    from sklearn.datasets import load_digits

    if split not in ("train", "test", "all"):
        raise ValueError(
            f"`split` for digits must be 'train', 'test' or 'all'. Received: split={split!r}"
        )
    digits = load_digits()
    order = np.random.RandomState(DIGITS_SEED).permutation(len(digits.target))
    if split == "test":
        order = order[:DIGITS_TEST_SIZE]
    elif split == "train":
        order = order[DIGITS_TEST_SIZE:]
    # Pixel values are ink intensities 0..16; scale to 0..255 (bright ink on black, like MNIST).
    gray = np.round(digits.images[order] * (255.0 / 16.0)).astype(np.uint8)
    pixels = np.repeat(gray[..., None], 3, axis=-1) if channels == 3 else gray[..., None]
    images = tf.image.resize(pixels, (image_size, image_size), method="nearest").numpy()
    labels = digits.target[order].astype(np.int32)
    records = tf.data.Dataset.from_tensor_slices((images, labels))
    return Source(
        name=f"digits:{split}",
        num_examples=len(labels),
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
        labels=labels,
        image_sizes=np.full((len(labels), 2), image_size),
        records=records,
        decode=lambda image, label: (image, label),
        channels=channels,
    )


def _load_tfds(name, split, data_dir, max_pixels, channels=3):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError as error:  # DatasetNotFoundError, or a config that does not exist
        configs = getattr(tfds.builder_cls(name.split("/")[0]), "builder_configs", {})
        raise ValueError(
            f"Unknown TFDS dataset or config {name!r}. Supported datasets: {', '.join(TFDS_NAMES)}"
            + (f"; configs of {name.split('/')[0]}: {', '.join(configs)}" if configs else "")
            + f". Received: source={name!r}"
        ) from error
    # Never call download_and_prepare: with no network it hangs or fails late. Check the files.
    if not builder.is_prepared():
        manual = ""
        if name.startswith("imagenet2012"):
            manual = (
                " ImageNet cannot be downloaded automatically: put ILSVRC2012_img_train.tar and "
                f"ILSVRC2012_img_val.tar in {os.path.join(builder.data_dir_root, 'downloads', 'manual')}"
                " first."
            )
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in data_dir={builder.data_dir_root!r} "
            f"(no valid files in {builder.data_dir}). Prepare it once on a machine with network "
            f"access: python -c \"import tensorflow_datasets as tfds; tfds.builder({name!r}, "
            f"data_dir='DIR').download_and_prepare()\", then copy DIR here and pass it with "
            f"--data-dir / data_dir=.{manual}"
        )
    available = tuple(builder.info.splits.keys())
    for part in split.split("+"):
        base = part.split("[")[0].strip()
        if base not in available:
            raise ValueError(
                f"`split` must use the splits of {name}: {', '.join(available)}. "
                f"Received: split={split!r}"
            )
    features = builder.info.features
    has_label = "label" in features
    class_names = tuple(features["label"].names) if has_label else ()
    num_examples = builder.info.splits[split].num_examples
    shape = features["image"].shape
    image_sizes = None
    if shape[0] is not None and shape[1] is not None:
        image_sizes = np.broadcast_to(np.array(shape[:2]), (num_examples, 2))
    # The encoded bytes, decoded by `decode_image` below: TFDS's own decoder is TensorFlow's default (the fast
    # IDCT, no pixel limit), which would give training other pixels than serving.
    dataset = builder.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})

    def to_record(example):
        label = tf.cast(example["label"], tf.int32) if has_label else tf.constant(-1, tf.int32)
        return example["image"], label

    def decode(contents, label):
        return decode_image(contents, max_pixels, name=f"an image of {name}:{split}", channels=channels), label

    return Source(
        name=f"{name}:{split}",
        num_examples=num_examples,
        num_classes=len(class_names),
        class_names=class_names,
        image_sizes=image_sizes,
        records=dataset.map(to_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True),
        decode=decode,
        max_pixels=max_pixels,
        channels=channels,
    )


def _load_folder(root, verify, max_pixels, channels=3):
    if not os.path.isdir(root):
        raise ValueError(
            f"`source` must be 'digits', a TFDS name ({', '.join(TFDS_NAMES)}) or an existing "
            f"folder. Received: source={root!r}"
        )
    paths, classes, repeated = _find_images(root)
    if repeated:
        warnings.warn(
            f"{len(repeated)} symlink{'s' if len(repeated) > 1 else ''} under {root!r} "
            f"{'lead' if len(repeated) > 1 else 'leads'} to a folder or file already read (a loop or a second name); "
            f"not followed again, each real file is read once: {', '.join(repeated[:3])}",
            stacklevel=3,
        )
    if not paths:
        raise ValueError(
            f"No image files ({' '.join(IMAGE_EXTENSIONS)}) found under the folder {root!r}."
        )
    class_names = tuple(sorted({c for c in classes if c is not None}))
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index.get(c, -1) for c in classes], dtype=np.int32)
    if class_names and np.any(labels < 0):
        warnings.warn(
            f"{int(np.sum(labels < 0))} images sit directly in {root!r} next to the class folders "
            f"{list(class_names)}; they get label -1 (unlabelled).",
            stacklevel=3,
        )
    # Every file's size, from its header (cheap) or from decoding it (`verify`): known either way, so that the
    # pipeline's choice of path (`byol_keras.data.choose_path`) does not depend on `verify`.
    ok, image_sizes = (_verify_files if verify else _header_sizes)(paths, max_pixels)
    skipped = tuple((paths[i], _decode_error(paths[i], max_pixels)) for i in np.flatnonzero(~ok))
    if not np.any(ok):
        raise ValueError(
            f"None of the {len(paths)} image files under {root!r} could be decoded, "
            f"e.g. {skipped[0][0]}: {skipped[0][1]}"
        )
    if skipped:
        examples = "; ".join(f"{path}: {reason}" for path, reason in skipped[:3])
        warnings.warn(
            f"Skipped {len(skipped)} of {len(paths)} files under {root!r} that are not "
            f"decodable images (listed in Source.skipped), e.g. {examples}",
            stacklevel=3,
        )
    paths = [p for p, keep in zip(paths, ok) if keep]
    labels, image_sizes = labels[ok], image_sizes[ok]
    records = tf.data.Dataset.from_tensor_slices((paths, labels))
    return Source(
        name=root,
        num_examples=len(paths),
        num_classes=len(class_names),
        class_names=class_names,
        labels=labels,
        image_sizes=image_sizes,
        skipped=skipped,
        records=records,
        decode=lambda path, label: (
            decode_image(tf.io.read_file(path), max_pixels, name=path, channels=channels), label),
        file_backed=True,
        max_pixels=max_pixels,
        channels=channels,
    )


def _find_images(root):
    """The image files under `root` in sorted order: `(paths, top-level folder of each or None, repeated links)`.

    Symlinks are followed, each real folder and each real file once: a link to a folder or file that the walk
    has already met (a loop such as `ln -s .. train/even/loop`, or a second name for the same thing) is not
    followed and is returned in `repeated`. A folder is met when its parent lists it, so a real folder wins
    over a deeper link to it; otherwise the first in the sorted walk wins. The walk is `os.walk`'s (top-down,
    folders in sorted order, unreadable folders passed over), with one listing a folder (`os.scandir`) and a real
    path resolved only for a link: an entry that is no link lies where its folder's real path says.
    """
    paths, classes, repeated = [], [], []
    real_root = os.path.realpath(root)
    seen_folders, seen_files = {real_root}, set()

    def walk(directory, real_directory, top):
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            return
        folders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_folder = entry.is_dir()
            except OSError:
                is_folder = False
            link = entry.is_symlink()
            if is_folder:
                real = os.path.realpath(entry.path) if link else os.path.join(real_directory, entry.name)
                if real in seen_folders:
                    repeated.append(entry.path)
                    continue
                seen_folders.add(real)
                folders.append((entry, real))
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                real = os.path.realpath(entry.path) if link else os.path.join(real_directory, entry.name)
                if real in seen_files:
                    repeated.append(entry.path)
                    continue
                seen_files.add(real)
                paths.append(entry.path)
                classes.append(top)
        for entry, real in folders:
            walk(entry.path, real, entry.name if top is None else top)

    walk(root, real_root, None)
    return paths, classes, repeated


def _header_sizes(paths, max_pixels):
    """Every file's size read from its header, nothing decoded: `(ok (n,) bool, sizes (n, 2) int)`.

    Not ok: a file that cannot be read, of no supported format, of zero size, or above `max_pixels`. JPEG, PNG and
    BMP headers are read in Python (`decoding.file_image_header`, a few bytes a file); GIFs and the JPEGs that walk
    does not follow go through `decoding.image_header` in a parallel tf.data pass.
    """
    ok = np.zeros(len(paths), dtype=bool)
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    rest = []
    ranges = ((first, min(first + SCAN_BATCH, len(paths))) for first in range(0, len(paths), SCAN_BATCH))
    for start, stop in _with_progress(ranges, len(paths), "Reading the image headers", lambda r: r[1] - r[0]):
        for index in range(start, stop):
            try:
                found = file_image_header(paths[index])
            except OSError:
                continue  # unreadable: not ok
            if found is None:
                rest.append(index)
                continue
            code, height, width, pixels = found
            ok[index] = code != 0 and height > 0 and width > 0 and pixels <= float(max_pixels)
            sizes[index] = height, width
    if rest:
        ok[rest], sizes[rest] = _graph_header_sizes([paths[i] for i in rest], max_pixels)
    return ok, sizes


def _graph_header_sizes(paths, max_pixels):
    """`_header_sizes` by `decoding.image_header` on each whole file, in a parallel tf.data pass."""

    def size_of(index, path):
        code, height, width, pixels = image_header(tf.io.read_file(path))
        ok = (code != 0) & (height > 0) & (width > 0) & (pixels <= float(max_pixels))
        return index, ok, tf.stack([height, width])

    dataset = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    dataset = dataset.map(size_of, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    ok = np.zeros(len(paths), dtype=bool)
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    for indices, good, shapes in dataset.batch(SCAN_BATCH).as_numpy_iterator():
        ok[indices] = good
        sizes[indices] = shapes
    return ok, sizes


# A folder's scan goes in batches of this many files; a progress bar appears once it has taken PROGRESS_AFTER s.
SCAN_BATCH = 512
PROGRESS_AFTER = 3.0


def _with_progress(batches, total, what, size=lambda batch: len(batch[0])):
    """Iterate `batches` (of `size(batch)` files each), with a progress bar on stderr once the scan has taken
    `PROGRESS_AFTER` seconds: a million-file folder says where it is."""
    import sys
    import time

    start, done, bar = time.monotonic(), 0, None
    for batch in batches:
        done += size(batch)
        yield batch
        if bar is None and time.monotonic() - start > PROGRESS_AFTER and done < total:
            print(f"{what} ({total:,} files) ...", file=sys.stderr, flush=True)
            bar = _Progress(total, sys.stderr)
        if bar is not None:
            bar.update(done)
    if bar is not None:
        bar.finish(time.monotonic() - start)


class _Progress:
    """A one-line text bar, redrawn in place: `[=====     ] 5,120/10,000`."""

    def __init__(self, total, stream, width=30):
        self.total, self.stream, self.width = total, stream, width

    def update(self, done):
        filled = int(self.width * done / self.total)
        self.stream.write(f"\r[{'=' * filled}{' ' * (self.width - filled)}] {done:,}/{self.total:,}")
        self.stream.flush()

    def finish(self, seconds):
        self.update(self.total)
        self.stream.write(f" in {seconds:.1f} s\n")
        self.stream.flush()


def _verify_files(paths, max_pixels):
    """Decode every file once in a parallel tf.data pass; `(ok (n,) bool, sizes (n, 2) int)`."""

    def size_of(index, path):
        image = decode_image(tf.io.read_file(path), max_pixels)
        return index, tf.shape(image)[:2]

    # Failed files are simply missing from the output: `ignore_errors` drops them, the indices
    # that come back tell which ones decoded.
    dataset = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    dataset = dataset.map(size_of, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    ok = np.zeros(len(paths), dtype=bool)
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    for indices, shapes in _with_progress(dataset.batch(SCAN_BATCH).as_numpy_iterator(), len(paths),
                                      "Decoding every image (verify=True)"):
        ok[indices] = True
        sizes[indices] = shapes
    return ok, sizes


def _decode_error(path, max_pixels):
    """The first line of the decoder's error message for one file (for the skip report)."""
    try:
        _decode_in_graph(tf.io.read_file(path), max_pixels)
    except (tf.errors.OpError, OSError, ValueError) as error:
        message = getattr(error, "message", None) or str(error)
        # Keep the decoder's sentence, not TF's op-location wrapper around it (nor an assertion's): in a graph
        # error it is the paragraph after the traceback of where the op was defined.
        message = message.strip().split("\n\n")[-1]
        message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
        message = re.sub(r"\s*\[Op:\w+\].*$", "", message.strip().splitlines()[0])
        message = re.sub(r"^assertion failed: \[(.*)\]$", r"\1", message)
        return message[:200]
    return "could not be decoded during the scan"


@tf.function(reduce_retracing=True)
def _decode_in_graph(contents, max_pixels):
    # In a graph, as the pipelines decode: the same messages, and the GIF walk's loop is not run op by op.
    return decode_image(contents, max_pixels)


class DecodeFailures:
    """The records of a source that its pipelines skipped because they failed to decode when met.

    A folder's scan reads headers only, so a file whose data is damaged behind a good header (a truncated JPEG,
    garbage after a JPEG's markers) is found when a pipeline decodes it: the pipeline drops it (`ignore_errors`,
    with a line of TensorFlow's log giving the decoder's error), warns, and records it here. Each skip is recorded
    as its place in the pipeline's stream (epoch, position); `files()` names them, by replaying the (cheap, seeded)
    order of the records, only when asked.
    """

    def __init__(self, name):
        self.name = name
        self._met = []  # (resolve, epoch, position)

    def add(self, resolve, places):
        """Record the skipped places `[(epoch, position), ...]` of one pipeline; `resolve(epoch, position)` names one."""
        self._met.extend((resolve, epoch, position) for epoch, position in places)
        warnings.warn(
            f"Skipped {len(places)} image{'s' if len(places) > 1 else ''} of {self.name} that failed to decode when "
            f"read (TensorFlow's log gives the error); {len(self._met)} so far, counted in the run's summary.",
            stacklevel=2,
        )

    def files(self):
        """The names (file paths) of the records skipped so far, each once, sorted."""
        return sorted({resolve(epoch, position) for resolve, epoch, position in self._met})

    def __len__(self):
        """How many skips were met (a file met in several epochs counts in each)."""
        return len(self._met)


def reporting_gaps(dataset, length, first, failures, resolve):
    """`dataset` without its elements' last component, after reporting the records that `ignore_errors` dropped.

    `dataset` holds the decoded elements that survived, each ending with its place in the stream, an int64
    `(epoch, position)`. Every position missing between two consecutive elements, or after the last one of a
    finite stream, is reported to `failures` with `resolve`. An epoch holds positions `0..length-1`, and the
    stream's first epoch starts at `first = (epoch, position)`. A sequential scan of two integers: a comparison an
    element, and Python only at a gap.
    """
    first_epoch, first_position = first
    spec = dataset.element_spec
    # The end of a finite stream, marked by a last element at epoch -1.
    zeros = tf.nest.map_structure(lambda s: tf.zeros([d or 0 for d in s.shape], s.dtype), tuple(spec[:-1]))
    end = zeros + (tf.constant([-1, 0], tf.int64),)
    dataset = dataset.concatenate(tf.data.Dataset.from_tensors(end))

    def report(last_epoch, next_position, epoch, position):
        last_epoch, next_position, epoch, position = (int(x) for x in (last_epoch, next_position, epoch, position))
        places = []
        if epoch == last_epoch:
            places += [(epoch, p) for p in range(next_position, position)]
        else:
            if last_epoch >= 0:
                places += [(last_epoch, p) for p in range(next_position, length)]
            if epoch >= 0:
                places += [(epoch, p) for p in range(first_position if epoch == first_epoch else 0, position)]
        if places:
            failures.add(resolve, places)
        return np.int64(len(places))

    def step(state, element):
        last_epoch, next_position = state
        epoch, position = tf.unstack(element[-1], num=2)
        start = tf.where(tf.equal(epoch, first_epoch), tf.constant(first_position, tf.int64), 0)
        gap = tf.where(tf.equal(epoch, last_epoch), position != next_position,
                       ((epoch >= 0) & (position != start)) | ((last_epoch >= 0) & (next_position < length)))
        reported = tf.cond(gap, lambda: tf.py_function(report, [last_epoch, next_position, epoch, position], tf.int64),
                           lambda: tf.constant(0, tf.int64))
        # `reported` is 0 or more; adding 0 * it keeps the report in the graph's data flow.
        return (epoch, position + 1 + 0 * reported), element

    dataset = dataset.scan((tf.constant(-1, tf.int64), tf.constant(0, tf.int64)), step)
    dataset = dataset.filter(lambda *element: element[-1][0] >= 0)
    return dataset.map(lambda *element: tf.nest.map_structure(lambda t, s: tf.ensure_shape(t, s.shape),
                                                              tuple(element[:-1]), tuple(spec[:-1])))


# --------------------------------------------------------------------------------------------------
# Records to images: the first step of every pipeline


def decoded_dataset(source, records, transform=None, all_records=True):
    """Map records to `(image, label)` in order, in parallel, dropping records that fail to decode.

    `all_records`: `records` holds every record of `source` (possibly shuffled), not a subset.
    """

    def decode(index, record):
        image, label = source.decode(*record)
        if transform is not None:
            image = transform(image)
        return image, tf.cast(label, tf.int32), tf.stack([tf.constant(0, tf.int64), index])

    def resolve(epoch, position):
        record = next(iter(records.skip(position).take(1)))
        return record_name(source, record, position)

    dataset = records.enumerate().map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Files that fail after the scan: skipped, with a TF log line each, instead of stopping a long run; and
    # warned about and counted (`Source.met_failures`).
    dataset = dataset.ignore_errors(log_warning=True)
    dataset = reporting_gaps(dataset, int(records.cardinality()), (0, 0), source.met_failures, resolve)
    if source.exact_count and all_records:
        # ignore_errors makes the length unknown; Keras would then discover the epoch length
        # by running out of data, with an "input ran out of data" warning in the first epoch. A record skipped
        # here (a file damaged behind a good header) leaves its place to the first records again, so that the
        # declared length holds.
        dataset = dataset.concatenate(dataset).take(source.num_examples)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(source.num_examples))
    return dataset


def record_name(source, record, position):
    """A record's name for reports: its file path, or its position in the source."""
    first = record[0].numpy() if isinstance(record, (tuple, list)) else None
    if source.file_backed and isinstance(first, bytes):
        return first.decode("utf-8", "replace")
    return f"{source.name} record {position}"


def check_source(source):
    """`TypeError` naming the argument unless `source` is a `Source` (what every pipeline of a source checks first)."""
    if not isinstance(source, Source):
        raise TypeError(
            "`source` must be a Source from byol_keras.sources.load_source. "
            f"Received: source={source!r} of type {type(source).__name__}"
        )
