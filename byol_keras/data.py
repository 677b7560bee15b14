"""`tf.data` input for BYOL: TFDS names, image folders and the offline `digits` demo set.

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
- A folder is *verified* when it is opened (`verify=True`): every file is decoded once with the same
  decoder the pipelines use. Files that cannot be decoded (a text file named `.jpg`, an empty file, a
  truncated JPEG/PNG/GIF/BMP, an image above `max_pixels`) are skipped; they are listed in
  `Source.skipped` with the reason (the size and the limit for a refused image) and their number is
  reported right away with `warnings.warn`, naming a few of them. Counting at scan time makes the count
  exact and available before training starts. TensorFlow 2.21 refuses truncated JPEGs (even one that
  only lacks its end-of-image marker) rather than returning a partly grey image, so truncation is
  caught by this check. With `verify=False` (for folders too large to decode twice) nothing is
  checked up front; files that fail at training time are dropped by `tf.data`'s `ignore_errors`,
  which logs each one through TensorFlow's C++ log (a refused image's line names its file, size and
  the limit) and does not count them.
- Readable images are converted to RGB uint8: grayscale is replicated to three channels, palette
  images are expanded, 16-bit PNGs keep their high byte, the alpha channel of RGBA images is dropped
  (not composited) and animated GIFs give their first frame. TensorFlow decodes palette (<= 8-bit)
  BMPs to wrong colours without any error, so those few files are decoded with Pillow instead.
- An image smaller than the requested size is upscaled (bicubic), not dropped; a warning counts them,
  once per source and size, when the sizes are known (folders, fixed-size TFDS sets, digits).
- An empty folder, a folder with no decodable image, an unknown TFDS name and a TFDS set that is not
  prepared are errors that name the path or the name.

The pipelines: `pretrain_dataset` yields `(view1, view2, labels)` batches for `BYOL.fit`; `load_arrays`
loads a (class-balanced) labelled subset, centre-cropped as for evaluation, into numpy arrays for a kNN
bank. Linear evaluation and fine-tuning build their own (`byol_keras.evaluation.classification_dataset`).

Example:

>>> source = load_source("digits", split="train", image_size=32)
>>> views = lambda x: (x, x[:, :, ::-1])  # a real run uses the augmentations in byol_keras.augment
>>> ds = pretrain_dataset(source, views, batch_size=64, image_size=32, seed=0)
>>> v1, v2, labels = next(iter(ds))
>>> tuple(v1.shape), labels.dtype.name
((64, 32, 32, 3), 'int32')
"""

import dataclasses
import os
import re
import warnings

import numpy as np
import tensorflow as tf

from byol_keras.augment import center_crop_resize
from byol_keras.decoding import DEFAULT_MAX_PIXELS
from byol_keras.decoding import JPEG_DCT_METHOD  # noqa: F401  (the decoders' IDCT; benchmarks read it here)
from byol_keras.decoding import check_max_pixels
from byol_keras.decoding import checked
from byol_keras.decoding import decode_image
from byol_keras.decoding import decode_jpeg_window
from byol_keras.validation import check_positive_int

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

# TFDS datasets this module knows how to read (image + optional label features).
TFDS_NAMES = ("cifar10", "cifar100", "stl10", "imagenette", "imagenet2012")

# `digits` split: a fixed permutation (seed 0) of the 1,797 images; the first 360 (20%) are the test
# split, the other 1,437 the train split. Fixed so that results stay comparable between runs.
DIGITS_SEED = 0
DIGITS_TEST_SIZE = 360

# `cache="auto"` keeps decoded images in memory when they take at most this many bytes.
AUTO_CACHE_BYTES = 2 * 1024**3

# The per-image path decodes each view's window of a JPEG (`decode_and_crop_jpeg`, one call per view) rather
# than the whole image once: measured faster on photos (docs/design.md, "Views from the whole photo").
# `benchmarks/pipeline.py --jpeg whole` flips it to measure the alternative.
DECODE_JPEG_WINDOWS = True


@dataclasses.dataclass(eq=False)
class Source:
    """An opened image source: records in a fixed order plus what is known about them.

    Build it with `load_source`. `dataset` gives the decoded `(image, label)` pairs: image a uint8
    `(height, width, 3)` tensor (sizes may differ between images), label an int32 scalar, `-1` when
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
    """

    name: str
    num_examples: int
    num_classes: int
    class_names: tuple
    labels: object = dataclasses.field(default=None, repr=False)
    image_sizes: object = dataclasses.field(default=None, repr=False)
    skipped: tuple = ()
    max_pixels: int = DEFAULT_MAX_PIXELS
    # The records (file paths or images, with labels) and the function turning one record into an
    # `(image, label)` pair. Kept apart so that cheap records can be shuffled before decoding.
    records: tf.data.Dataset = dataclasses.field(default=None, repr=False)
    decode: object = dataclasses.field(default=None, repr=False)
    # True when records are file paths: shuffling those is cheap, so it happens before decoding.
    file_backed: bool = dataclasses.field(default=False, repr=False)
    # True when every record is known to decode (verified folders, TFDS, digits): the pipelines
    # then declare their length, which gives Keras' `fit` its number of steps per epoch.
    exact_count: bool = dataclasses.field(default=True, repr=False)
    _warned_sizes: set = dataclasses.field(default_factory=set, repr=False)

    @property
    def dataset(self):
        """`tf.data.Dataset` of `(uint8 image (h, w, 3), int32 label)` in the source's fixed order."""
        return _decoded(self, self.records)


def load_source(source, split="train", data_dir=None, image_size=None, verify=True, max_pixels=DEFAULT_MAX_PIXELS):
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
        verify: bool, decode every file of a folder once now to skip and count the unreadable ones
            (see the module docstring). Defaults to True.
        max_pixels: int, images (files or TFDS records) whose header declares more pixels are skipped
            without being decoded (a GIF counts all its frames). Defaults to `DEFAULT_MAX_PIXELS`
            (89,478,485, Pillow's decompression-bomb threshold). The TFDS sets of `TFDS_NAMES` hold no image
            near it; a TFDS image refused under a lower limit fails the epoch's length check, as a TFDS set's
            count is taken as exact.

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
    if not isinstance(split, str):
        raise TypeError(f"`split` must be a str. Received: split={split!r}")
    source = os.fspath(source)
    if source == "digits":
        result = _load_digits(split, image_size or 32)
    elif source.split("/")[0] in TFDS_NAMES:
        result = _load_tfds(source, split, data_dir, max_pixels)
    else:
        with_split = os.path.join(source, split)
        result = _load_folder(with_split if os.path.isdir(with_split) else source, verify, max_pixels)
    if image_size is not None:
        warn_small_images(result, image_size)
    return result


def pretrain_dataset(
    source,
    views,
    batch_size,
    image_size=None,
    shuffle=True,
    seed=None,
    cache="auto",
    shuffle_buffer=10_000,
    views_on="data",
    repeat=False,
    start_batch=0,
):
    """The BYOL pretraining pipeline: `(view1, view2, labels)` batches whose crops come from whole images.

    With `views` a `byol_keras.augment.BYOLAugment`, each view's crop window is drawn on the image's own
    height and width (`BYOLView.crop_window`, the official or torchvision law), as the official code and
    torchvision do, on one of two paths:

    - **Per image** (photos, ImageNet, any source whose images differ in size or are large): for a JPEG
      only each view's window is decoded (`tf.io.decode_and_crop_jpeg`); other formats are decoded once
      and cropped. Each crop is resized to the view's `image_size` (`interpolation`, no antialiasing, as the
      official code), rounded to uint8 and batched; the flip, colour jitter, grayscale, blur and
      solarisation then run vectorised on the batch (`BYOLAugment.augment_crops`), each image with its
      own draws.
    - **Native size** (CIFAR, STL-10, digits): when every image has one known size of at most twice the
      view's side, the images are decoded once (cached in memory when they fit), batched at that size, and
      `BYOLAugment` cuts and resizes the windows by per-image matrix products, which at these sizes is
      cheaper than work per image. Same windows, same crop-then-resize maths.

    Any other `views` callable receives uint8 batches of `image_size` squares (the shorter side resized
    to `image_size`, the centre square kept), and `views=None` yields those squares themselves.

    **Every batch is a function of `seed` and its position in the stream**, so that a run resumed at global
    step k (`repeat=True, start_batch=k`) sees the batches an uninterrupted run sees from step k on. Epoch e
    shuffles with a seed derived from `(seed, e)`; every random draw of the views (crop windows, flips,
    colour, blur, solarisation) is stateless, keyed by `(seed, epoch, position in the epoch)`
    (`BYOLAugment.augment_images`, `augment_crops(..., key=)`), not by a generator whose state would depend on
    how far the pipeline ran ahead; all parallel maps keep their order. Incomplete batches are dropped
    (BatchNorm and the BYOL loss see full batches): each epoch uses the first `batch_size * (num_examples //
    batch_size)` examples of its order. When records are files and not cached, the file list is shuffled (a
    full permutation) before decoding, so the shuffle costs no image memory and skipping costs nothing;
    otherwise decoded images are shuffled with a buffer of `shuffle_buffer` (all images when cached). A
    `views` callable that is not a `BYOLAugment` draws its own randomness, which this cannot key.

    Args:
        source: `Source` from `load_source`.
        views: a `BYOLAugment`; or any callable mapping a uint8 batch `(batch, image_size, image_size, 3)`
            to two float32 tensors `(view1, view2)`; or None to yield uint8 `(images, labels)` batches of
            `image_size` squares for a model that augments them itself.
        batch_size: int, positive, at most `source.num_examples`.
        image_size: int or None. Only for a `views` that is not a `BYOLAugment` (or None): the side of the
            square images it receives. A `BYOLAugment` crops whole images to its own `image_size`.
            Defaults to None.
        shuffle: bool, reshuffle every epoch. Defaults to True.
        seed: int or None. The same seed gives the same batches in every run. Defaults to None (different
            every run).
        cache: True, False or `"auto"`: keep the decoded uint8 images in memory (`"auto"`: when they take at
            most `AUTO_CACHE_BYTES` at their own size, known for verified folders, digits and fixed-size
            TFDS sets). Defaults to `"auto"`.
        shuffle_buffer: int, buffer for shuffling decoded images that are not cached. Defaults to
            10,000.
        views_on: `"data"` or `"device"`, only with a `BYOLAugment`. `"device"`: this pipeline does only
            the CPU part, decoding and cutting the windows, and yields `(crops1, crops2, labels)` (uint8
            crops at the view size) on the per-image path or `(images, labels)` (uint8 images at their
            native size) on the native-size path; `BYOL(augment=views, augment_on="device")` makes the
            rest of the views on the accelerator. Defaults to `"data"`.
        repeat: bool. False: one epoch, of known length; iterating the dataset again gives another epoch
            (another order and other draws, the same sequence in every run). True: the endless stream of
            epochs 0, 1, 2, ..., epoch e drawn from `(seed, e)` alone, for `fit(..., steps_per_epoch=...)`.
            Defaults to False.
        start_batch: int >= 0, only with `repeat=True`: the stream starts at this batch of the endless
            stream (a run resumed at global step k passes k; with `steps_per_epoch` below an epoch's batches,
            Keras' epochs and the data's differ, and the global step counts the data's). The skipped records
            of a file list are skipped before decoding; decoded images are skipped after the shuffle and before
            the views. Defaults to 0.

    Returns:
        `tf.data.Dataset` of `(view1, view2, labels)`, or as `views_on="device"` / `views=None` say above;
        labels int32 `(batch,)`, `-1` when unlabelled.
    """
    from byol_keras.augment import BYOLAugment

    _check_source(source)
    augment = views if isinstance(views, BYOLAugment) else None
    if views is not None and not callable(views):
        raise TypeError(f"`views` must be a BYOLAugment, a callable or None. Received: views={views!r}")
    check_positive_int("batch_size", batch_size)
    check_positive_int("shuffle_buffer", shuffle_buffer)
    if augment is None:
        if image_size is None:
            raise ValueError(
                "`image_size` is needed when `views` is not a BYOLAugment: it is the side of the square "
                f"images `views` receives. Received: image_size=None, views={views!r}"
            )
        check_positive_int("image_size", image_size)
    elif image_size is not None and image_size != augment.image_size:
        raise ValueError(
            f"`image_size` must be None or the BYOLAugment's own image_size ({augment.image_size}): the views "
            f"crop whole images to it. Received: image_size={image_size!r}"
        )
    if views_on not in ("data", "device"):
        raise ValueError(f"`views_on` must be 'data' or 'device'. Received: views_on={views_on!r}")
    if views_on == "device" and augment is None:
        raise ValueError(
            "`views_on='device'` needs `views` to be the BYOLAugment the model will apply "
            f"(`BYOL(augment=..., augment_on='device')`). Received: views={views!r}"
        )
    if seed is not None and not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an int or None. Received: seed={seed!r}")
    if not isinstance(start_batch, (int, np.integer)) or isinstance(start_batch, bool) or start_batch < 0:
        raise ValueError(f"`start_batch` must be an int >= 0. Received: start_batch={start_batch!r}")
    if start_batch and not repeat:
        raise ValueError(
            "`start_batch` is a position in the endless stream of epochs: pass `repeat=True` with it. "
            f"Received: start_batch={start_batch}, repeat={repeat!r}"
        )
    if cache not in (True, False, "auto"):
        raise ValueError(f"`cache` must be True, False or 'auto'. Received: cache={cache!r}")
    if batch_size > source.num_examples:
        raise ValueError(
            f"`batch_size` must be at most the number of examples ({source.num_examples} in "
            f"{source.name}), since incomplete batches are dropped. Received: batch_size={batch_size}"
        )

    native = augment is not None and native_size(source, augment.image_size)
    if augment is None:
        decoded_bytes = source.num_examples * image_size * image_size * 3
    elif source.image_sizes is not None:
        decoded_bytes = int(np.sum(np.prod(source.image_sizes, axis=1))) * 3
    else:
        decoded_bytes = None  # unknown sizes: never cached automatically
    if cache == "auto":
        cache = decoded_bytes is not None and decoded_bytes <= AUTO_CACHE_BYTES
    warn_small_images(source, augment.image_size if augment is not None else image_size)

    # What each epoch puts in order: the records themselves when they are files read afresh every epoch (a
    # shuffle then costs no image memory, and skipping costs nothing), else the decoded images (cached or not).
    decode_late = source.file_backed and not cache
    resize = None if augment is not None else (lambda image: _resize_square(image, image_size))
    if decode_late:
        items = source.records
    else:
        items = _decoded(source, source.records, resize)
        if cache:
            items = items.cache()
    buffer = source.num_examples if (decode_late or cache) else min(shuffle_buffer, source.num_examples)
    batches_per_epoch = source.num_examples // batch_size
    first_epoch, first_batch = divmod(int(start_batch), batches_per_epoch)

    @_plain_graph
    def epoch_items(epoch, epoch_key):
        """One epoch's items in order, each with its stateless key `fold_in(epoch_key, position)`."""
        ordered = items
        if shuffle:
            ordered = _shuffled(ordered, buffer, epoch_key)
        skip = tf.where(epoch == first_epoch, tf.constant(first_batch * batch_size, tf.int64), 0)
        ordered = ordered.take(batches_per_epoch * batch_size).skip(skip)
        positions = tf.data.Dataset.range(skip, batches_per_epoch * batch_size)
        keys = positions.map(lambda position: tf.random.experimental.stateless_fold_in(epoch_key, position))
        return tf.data.Dataset.zip((ordered, keys))

    base_key = _base_key(seed)
    if repeat:
        epochs = tf.data.Dataset.range(first_epoch, _ENDLESS)
    else:
        # One epoch per iteration, numbered by a random draw that is new each time the dataset is iterated
        # (the same sequence in every run with a seed): every epoch gets another order and other views.
        epochs = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        epochs = epochs.map(lambda r: tf.bitwise.bitwise_and(r, 2**62 - 1) + _ENDLESS)
    epochs = epochs.map(lambda epoch: (epoch, tf.random.experimental.stateless_fold_in(base_key, epoch)))
    stream = epochs.flat_map(epoch_items)

    per_image = augment is not None and not native
    if decode_late:
        if per_image:
            @_plain_graph
            def crop(record, key):
                path, label = record
                return _crop_views_from_file(path, key, augment.views, source.max_pixels), tf.cast(label, tf.int32), key
        else:
            @_plain_graph
            def crop(record, key):
                image, label = source.decode(*record)
                return (image if resize is None else resize(image)), tf.cast(label, tf.int32), key
        stream = stream.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # Files that fail after the scan (or in unverified folders): skipped, with a TF log line naming them.
        stream = stream.ignore_errors(log_warning=True)
    elif per_image:
        @_plain_graph
        def crop(image_label, key):
            image, label = image_label
            return _crop_views_from_image(image, key, augment.views), label, key

        stream = stream.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        stream = stream.map(lambda image_label, key: (*image_label, key))

    def exact_length(batches):
        if repeat or not source.exact_count:
            return batches
        # The length Keras' `fit` reads as its steps per epoch (flat_map and ignore_errors hide it).
        return batches.apply(tf.data.experimental.assert_cardinality(batches_per_epoch))

    def key_of(keys):
        # The key of a batch's (or chunk's) colour stages: its first element's, folded away from the windows' 0, 1.
        return tf.random.experimental.stateless_fold_in(keys[0], 2)

    if per_image:
        if views_on == "device":
            batches = exact_length(stream.batch(batch_size, drop_remainder=True))
            return batches.map(lambda pair, labels, keys: (pair[0], pair[1], labels)).prefetch(tf.data.AUTOTUNE)

        # The views are finished in chunks of a few dozen images, then joined into batches: every stage is per
        # image, so a chunk computes what the whole batch would, with the compiled view's temporaries a chunk's
        # size rather than a batch's (peak memory: benchmarks/README.md). Each chunk draws from its own key.
        chunk = _view_chunk(batch_size)

        @_plain_graph
        def finish_views(pair, labels, keys):
            return augment.augment_crops(*pair, key=key_of(keys)) + (labels,)

        chunks = stream.batch(chunk, drop_remainder=True)
        chunks = chunks.map(finish_views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if chunk == batch_size:
            return exact_length(chunks).prefetch(tf.data.AUTOTUNE)

        def join(first, second, labels):
            return tuple(tf.reshape(t, [batch_size] + t.shape[2:].as_list()) for t in (first, second, labels))

        batches = chunks.batch(batch_size // chunk, drop_remainder=True).map(join)
        return exact_length(batches).prefetch(tf.data.AUTOTUNE)

    batches = exact_length(stream.batch(batch_size, drop_remainder=True))
    if views is None or views_on == "device":
        return batches.map(lambda images, labels, keys: (images, labels)).prefetch(tf.data.AUTOTUNE)

    @_plain_graph
    def make_views(images, labels, keys):
        if augment is not None:
            return augment.augment_images(images, key_of(keys)) + (labels,)
        return _check_pair(views(images), views) + (labels,)

    batches = batches.map(make_views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)


VIEW_CHUNK = 32  # images per call of the compiled views in the per-image path


def _view_chunk(batch_size):
    """Images per chunk of the views: the largest divisor of `batch_size` up to `VIEW_CHUNK`, or the whole batch
    where that divisor is under 8 (a prime batch size, say), so that chunks are never tiny."""
    chunk = max(size for size in range(1, min(batch_size, VIEW_CHUNK) + 1) if batch_size % size == 0)
    return chunk if chunk >= min(batch_size, 8) else batch_size


# The pipeline's map functions hold no Python control flow on tensors: traced as they are, without AutoGraph's
# conversion of every function they call (the views' maths), which took seconds per pipeline.
_plain_graph = tf.autograph.experimental.do_not_convert


# Epoch numbers of `repeat=True` run from 0 up to here; `repeat=False` numbers its epochs above it, so that the
# two never share an epoch's draws.
_ENDLESS = 2**62


def element_key(seed, epoch, position):
    """The stateless key `pretrain_dataset(..., seed=seed, repeat=True)` gives an example: `(2,)` int64.

    Epoch `epoch`'s key is `stateless_fold_in((seed, 0), epoch)`, and the example at `position` in that
    epoch's order gets `stateless_fold_in(epoch key, position)`. View `i`'s crop window is drawn from
    `stateless_fold_in(key, i)`, and the colour stages of a batch (of a chunk of `VIEW_CHUNK` on the per-image
    path) from `stateless_fold_in(key, 2)` of its first example's key (`BYOLAugment.augment_images`,
    `augment_crops`).

    Args:
        seed: int, the pipeline's seed.
        epoch: int >= 0, the epoch of the endless stream.
        position: int >= 0, the position in that epoch's order.

    Returns:
        int64 tensor `(2,)`.
    """
    epoch_key = tf.random.experimental.stateless_fold_in(_base_key(seed), tf.constant(epoch, tf.int64))
    return tf.random.experimental.stateless_fold_in(epoch_key, tf.constant(position, tf.int64))


def _base_key(seed):
    """The stream's root key: `(seed, 0)`, or a fresh random one without a seed."""
    if seed is None:
        seed = int(np.random.default_rng().integers(2**62))
    return tf.constant([int(seed), 0], tf.int64)


def _shuffled(dataset, buffer_size, key):
    """`dataset.shuffle(buffer_size, reshuffle_each_iteration=False)` in the order the stateless `key` alone gives.

    The shuffle op itself, with its two seeds drawn from `key`: `Dataset.shuffle` mixes TensorFlow's global seed
    (`tf.random.set_seed`, which `keras.utils.set_random_seed` sets) into its own, and cannot take a seed tensor
    when that global seed is 0 (TF 2.21's `random_seed.get_seed` compares it in Python).
    """
    # Never (0, 0), which the op reads as "nondeterministic".
    seeds = tf.random.stateless_uniform([2], seed=key, minval=1, maxval=2**62, dtype=tf.int64)
    components = tf.nest.flatten(dataset.element_spec)
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(dataset),
        buffer_size=tf.constant(buffer_size, tf.int64),
        seed=seeds[0],
        seed2=seeds[1],
        seed_generator=tf.raw_ops.DummySeedGenerator(),
        output_types=[spec.dtype for spec in components],
        output_shapes=[spec.shape for spec in components],
        reshuffle_each_iteration=False,
    )
    return tf.data.experimental.from_variant(variant, dataset.element_spec)


def native_size(source, image_size):
    """Whether `pretrain_dataset` takes the native-size path for views of side `image_size`.

    True when every image of `source` has one known size whose longer side is at most twice
    `image_size` (CIFAR-10 at 32 px, STL-10 at 96, digits): batches of whole images at that size are
    then cropped and resized by matrix products, which is cheaper than cutting each image alone. Larger
    or varying images (photos, ImageNet) take the per-image path.

    Args:
        source: `Source`.
        image_size: int, the views' side.

    Returns:
        bool.
    """
    sizes = source.image_sizes
    if sizes is None or len(sizes) == 0:
        return False
    first = np.asarray(sizes[0])
    return bool(np.all(np.asarray(sizes) == first)) and int(first.max()) <= 2 * image_size


def keep_elements(dataset, keep):
    """The elements of `dataset` where `keep` is True, in order, with the dataset's length known.

    The one way the library takes a subset of a dataset it does not hold in memory (`subset_per_class`,
    `load_arrays`, fine-tuning's labelled subset): nothing is decoded to choose, and `fit` still knows its
    steps per epoch (`filter` alone forgets the length).

    Args:
        dataset: `tf.data.Dataset` of `len(keep)` elements (anything: records, `(image, label)` pairs).
        keep: bool array `(len(dataset),)`.

    Returns:
        `tf.data.Dataset` of the kept elements.
    """
    keep = np.asarray(keep, dtype=bool)
    mask = tf.constant(keep)
    kept = dataset.enumerate().filter(lambda index, element: mask[index]).map(lambda index, element: element)
    return kept.apply(tf.data.experimental.assert_cardinality(int(keep.sum())))


def subset_per_class(source, limit):
    """The same source restricted to the first `limit` records of each class, in the source's order.

    Example:

    >>> subset_per_class(load_source("digits", split="train"), 5).num_examples
    50

    Args:
        source: `Source` whose labels are known up front (a class folder or digits).
        limit: int > 0.

    Returns:
        A `Source` with the kept records, labels and image sizes.

    Raises:
        ValueError: the source's labels are not known up front, or a bad `limit`.
    """
    check_positive_int("limit", limit)
    if source.labels is None:
        raise ValueError(
            f"`limit_per_class` needs a source whose labels are known up front (a class folder or digits); "
            f"{source.name} has none. Received: limit_per_class={limit}"
        )
    keep = _first_per_class(source.labels, limit)
    return dataclasses.replace(
        source,
        records=keep_elements(source.records, keep),
        num_examples=int(keep.sum()),
        labels=source.labels[keep],
        image_sizes=None if source.image_sizes is None else source.image_sizes[keep],
    )


def load_arrays(source, image_size, limit_per_class=None, crop_fraction=0.875):
    """Load labelled examples into memory, e.g. as a kNN bank: the first `limit_per_class` per class.

    Images get the evaluation transform (`center_crop_resize`) and are kept as uint8 so that a bank
    stays small; normalise them with `byol_keras.augment.normalize` before the encoder. Examples
    without a label (`-1`) are left out when `limit_per_class` is given. For folders and digits the
    subset is picked from the record labels before decoding; for TFDS the source is read in order
    until every class is full.

    Args:
        source: `Source` from `load_source`.
        image_size: int, side of the output images.
        limit_per_class: int or None, keep the first this many examples of each class in source
            order; None keeps everything. Defaults to None.
        crop_fraction: float in (0, 1]. Defaults to 0.875 (the paper's 224/256). Use 1.0 for 32 px
            CIFAR, where the crop would cut away an eighth of a tiny image.

    Returns:
        `(images, labels)`: uint8 numpy `(n, image_size, image_size, 3)` and int32 numpy `(n,)`.
    """
    _check_source(source)
    check_positive_int("image_size", image_size)
    _check_crop_fraction(crop_fraction)
    if limit_per_class is not None:
        check_positive_int("limit_per_class", limit_per_class)
        if source.num_classes == 0:
            raise ValueError(
                f"`limit_per_class` needs a labelled source, but {source.name} has no classes. "
                f"Received: limit_per_class={limit_per_class}"
            )
    warn_small_images(source, image_size)

    records = source.records
    if limit_per_class is not None and source.labels is not None:
        records = keep_elements(records, _first_per_class(source.labels, limit_per_class))

    def transform(image):
        image = center_crop_resize(image, image_size, crop_fraction)
        return tf.cast(tf.round(image), tf.uint8)

    images, labels = [], []
    counts = np.zeros(max(source.num_classes, 1), dtype=np.int64)
    subset = limit_per_class is not None and source.labels is not None
    for batch_images, batch_labels in _decoded(source, records, transform, not subset).batch(256):
        batch_images, batch_labels = batch_images.numpy(), batch_labels.numpy()
        if limit_per_class is not None:
            # Streaming selection (TFDS): keep labelled examples while their class is not full.
            mask = np.zeros(len(batch_labels), dtype=bool)
            for i, label in enumerate(batch_labels):
                if 0 <= label < len(counts) and counts[label] < limit_per_class:
                    counts[label] += 1
                    mask[i] = True
            batch_images, batch_labels = batch_images[mask], batch_labels[mask]
        images.append(batch_images)
        labels.append(batch_labels)
        if limit_per_class is not None and np.all(counts >= limit_per_class):
            break
    if not images or sum(len(x) for x in labels) == 0:
        raise ValueError(f"No image could be loaded from {source.name}.")
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


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


# --------------------------------------------------------------------------------------------------
# Sources


def _load_digits(split, image_size):
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
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    images = tf.image.resize(rgb, (image_size, image_size), method="nearest").numpy()
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
    )


def _load_tfds(name, split, data_dir, max_pixels):
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
        return decode_image(contents, max_pixels, name=f"an image of {name}:{split}"), label

    return Source(
        name=f"{name}:{split}",
        num_examples=num_examples,
        num_classes=len(class_names),
        class_names=class_names,
        image_sizes=image_sizes,
        records=dataset.map(to_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True),
        decode=decode,
        max_pixels=max_pixels,
    )


def _load_folder(root, verify, max_pixels):
    if not os.path.isdir(root):
        raise ValueError(
            f"`source` must be 'digits', a TFDS name ({', '.join(TFDS_NAMES)}) or an existing "
            f"folder. Received: source={root!r}"
        )
    paths, classes = [], []
    for directory, dirnames, filenames in os.walk(root, followlinks=True):
        # Sorted walk: the file order, hence the seeded shuffles, is the same on every filesystem.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        relative = os.path.relpath(directory, root)
        top = None if relative == os.curdir else relative.split(os.sep)[0]
        for filename in sorted(filenames):
            if filename.startswith(".") or not filename.lower().endswith(IMAGE_EXTENSIONS):
                continue
            paths.append(os.path.join(directory, filename))
            classes.append(top)
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
    image_sizes, skipped = None, ()
    if verify:
        ok, image_sizes = _verify_files(paths, max_pixels)
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
        decode=lambda path, label: (decode_image(tf.io.read_file(path), max_pixels, name=path), label),
        file_backed=True,
        exact_count=verify,
        max_pixels=max_pixels,
    )


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
    for indices, shapes in dataset.batch(4096).as_numpy_iterator():
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


# --------------------------------------------------------------------------------------------------
# Pipeline pieces


def _decoded(source, records, transform=None, all_records=True):
    """Map records to `(image, label)` in order, in parallel, dropping records that fail to decode.

    `all_records`: `records` holds every record of `source` (possibly shuffled), not a subset.
    """

    def decode(*record):
        image, label = source.decode(*record)
        if transform is not None:
            image = transform(image)
        return image, tf.cast(label, tf.int32)

    dataset = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Safety net for files that fail after the scan (or unverified folders): skip, with a TF log
    # line per file, instead of stopping a long run.
    dataset = dataset.ignore_errors(log_warning=True)
    if source.exact_count and all_records:
        # ignore_errors makes the length unknown; Keras would then discover the epoch length
        # by running out of data, with an "input ran out of data" warning in the first epoch.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(source.num_examples))
    return dataset


def _resize_square(image, image_size):
    """Shorter side to `image_size`, centre square, uint8 `(image_size, image_size, 3)`.

    Images already of that size pass through untouched (CIFAR at 32 px is not resampled).
    """
    shape = tf.shape(image)
    same = tf.logical_and(shape[0] == image_size, shape[1] == image_size)

    def resized():
        square = center_crop_resize(image, image_size, crop_fraction=1.0)
        return tf.cast(tf.round(square), tf.uint8)

    image = tf.cond(same, lambda: tf.cast(image, tf.uint8), resized)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def _check_pair(pair, views):
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(
            "`views` must return a pair (view1, view2). "
            f"Received: {type(pair).__name__} from views={views!r}"
        )
    return tuple(pair)


def _view_windows(height, width, key, views):
    """One crop window per view for an image of `height` x `width`, drawn statelessly from `key`."""
    windows = []
    for index, view in enumerate(views):
        view_key = tf.random.experimental.stateless_fold_in(key, index)
        draws = iter(tf.unstack(tf.random.experimental.stateless_split(view_key, 4), num=4))

        def draw(shape):
            return tf.random.stateless_uniform(shape, seed=next(draws))

        window = view.crop_window(tf.cast(height, tf.float32), tf.cast(width, tf.float32), view.crop_uniforms(1, draw))
        windows.append(tf.cast(tf.concat(window, axis=0), tf.int32))  # (y1, x1, crop_height, crop_width)
    return windows


def _resize_crop(crop, view):
    """A crop resized to the view's side as uint8 (rounded): the official code's resize, no antialiasing."""
    resized = tf.image.resize(crop, (view.image_size, view.image_size), method=view.interpolation, antialias=False)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def _crop_views_from_image(image, key, views):
    """Each view's window cut from a decoded `(h, w, 3)` image and resized: a tuple of uint8 crops."""
    shape = tf.shape(image)
    windows = _view_windows(shape[0], shape[1], key, views)
    return tuple(
        _resize_crop(tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3]), view)
        for window, view in zip(windows, views)
    )


def _crop_views_from_file(path, key, views, max_pixels):
    """Each view's window of an image file, resized: a JPEG decodes only the windows, others decode once.

    The file is checked first (`byol_keras.decoding.checked`: supported, not above `max_pixels`), by the same
    code as every other decode; a refused file raises an error naming it, which the pipeline skips and logs.
    """
    contents = tf.io.read_file(path)

    def jpeg_windows():
        checked_contents, _ = checked(contents, max_pixels, name=path)
        shape = tf.image.extract_jpeg_shape(checked_contents)
        windows = _view_windows(shape[0], shape[1], key, views)
        return tuple(
            _resize_crop(decode_jpeg_window(checked_contents, window), view) for window, view in zip(windows, views)
        )

    def whole_image():
        return _crop_views_from_image(decode_image(contents, max_pixels, name=path), key, views)

    if not DECODE_JPEG_WINDOWS:
        return whole_image()
    return tf.cond(tf.io.is_jpeg(contents), jpeg_windows, whole_image)


def _first_per_class(labels, limit):
    """Boolean mask `(n,)` keeping the first `limit` indices of each label >= 0, in order."""
    keep = np.zeros(len(labels), dtype=bool)
    counts = {}
    for i, label in enumerate(labels):
        if label >= 0 and counts.get(label, 0) < limit:
            counts[label] = counts.get(label, 0) + 1
            keep[i] = True
    return keep


def _check_source(source):
    if not isinstance(source, Source):
        raise TypeError(
            "`source` must be a Source from byol_keras.data.load_source. "
            f"Received: source={source!r} of type {type(source).__name__}"
        )


def _check_crop_fraction(crop_fraction):
    if not isinstance(crop_fraction, (int, float)) or not 0.0 < crop_fraction <= 1.0:
        raise ValueError(
            f"`crop_fraction` must be in (0, 1]. Received: crop_fraction={crop_fraction!r}"
        )
