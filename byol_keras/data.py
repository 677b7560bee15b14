"""`tf.data` input for BYOL: the pretraining pipeline, on the sources of `byol_keras.sources`.

`pretrain_dataset` yields `(view1, view2, labels)` batches for `BYOL.fit`, every batch a function of the seed
and its position in the stream (a resumed run continues it); `run_source` and `run_views` build a run's source and
stream from its configuration (`byol-pretrain` and the benchmarks call them alike). The rest of the input lives in
one module per concept:

- `byol_keras.sources`: `load_source` and `Source` (TFDS names, image folders, the `digits` demo set; bad
  files skipped and reported), `warn_small_images`, `TFDS_NAMES`, `IMAGE_EXTENSIONS`.
- `byol_keras.subsets`: `keep_elements`, `subset_per_class`.
- `byol_keras.eval_data`: `load_arrays`, a (class-balanced) labelled subset, centre-cropped as for evaluation,
  in NumPy arrays for a kNN bank. Linear evaluation and fine-tuning build their own pipeline
  (`byol_keras.eval_data.classification_dataset`).

Example:

>>> from byol_keras.sources import load_source
>>> source = load_source("digits", split="train", image_size=32)
>>> views = lambda x: (x, x[:, :, ::-1])  # a real run uses the augmentations in byol_keras.views
>>> ds = pretrain_dataset(source, views, batch_size=64, image_size=32, seed=0)
>>> v1, v2, labels = next(iter(ds))
>>> tuple(v1.shape), labels.dtype.name
((64, 32, 32, 3), 'int32')
"""

import numpy as np
import tensorflow as tf

from byol_keras.preprocessing import center_crop_resize
from byol_keras.decoding import DEFAULT_MAX_PIXELS, checked
from byol_keras.decoding import decode_image
from byol_keras.decoding import decode_jpeg_window
from byol_keras.sources import check_source, decoded_dataset, warn_small_images
from byol_keras import sources
from byol_keras.sources import load_source
from byol_keras.subsets import subset_per_class
from byol_keras.validation import check_positive_int

# `cache="auto"` keeps decoded images in memory when they take at most this many bytes.
AUTO_CACHE_BYTES = 2 * 1024**3

# The per-image path decodes each view's window of a JPEG (`decode_and_crop_jpeg`, one call per view) rather
# than the whole image once: measured faster on photos (docs/design.md, "Views from the whole photo").
# `benchmarks/pipeline.py --jpeg whole` flips it to measure the alternative.
DECODE_JPEG_WINDOWS = True


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
    path="auto",
):
    """The BYOL pretraining pipeline: `(view1, view2, labels)` batches whose crops come from whole images.

    With `views` a `byol_keras.views.BYOLAugment`, each view's crop window is drawn on the image's own
    height and width (`BYOLView.crop_window`, the official or torchvision law), as the official code and
    torchvision do, on one of two paths:

    - **Per image** (photos, ImageNet, any source whose images differ in size or are large for the view): for a JPEG
      only each view's window is decoded (`tf.io.decode_and_crop_jpeg`); other formats are decoded once
      and cropped. Each crop is resized to the view's `image_size` (`interpolation`, no antialiasing, as the
      official code), rounded to uint8 and batched; the flip, colour jitter, grayscale, blur and
      solarisation then run vectorised on the batch (`BYOLAugment.augment_crops`), each image with its
      own draws.
    - **Native size** (CIFAR, digits): when every image has one known size small enough for the view
      (`choose_path`), the images are decoded once (cached in memory when they fit), batched at that size, and
      `BYOLAugment` cuts and resizes the windows by per-image matrix products, which at these sizes is
      cheaper than work per image. Same windows, same crop-then-resize maths.

    The path depends only on the images' sizes and the view's (`choose_path`, measured), never on how the source
    was opened (`load_source(..., verify=)`).

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
        views: a `BYOLAugment` (of the source's `channels`); or any callable mapping a uint8 batch
            `(batch, image_size, image_size, channels)` (the source's channels) to two float32 tensors
            `(view1, view2)`; or None to yield uint8 `(images, labels)` batches of `image_size` squares for a model
            that augments them itself.
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
        path: `"auto"`, `"native"` or `"per_image"`, only with a `BYOLAugment`: the path above. `"auto"` takes
            the one `choose_path` gives, the faster one measured for these images and views; the other two
            force a path (for measuring them: a forced path is not what a user gets). Defaults to `"auto"`.

    Returns:
        `tf.data.Dataset` of `(view1, view2, labels)`, or as `views_on="device"` / `views=None` say above;
        labels int32 `(batch,)`, `-1` when unlabelled.
    """
    from byol_keras.views import BYOLAugment

    check_source(source)
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
    if augment is not None and augment.view1.channels != source.channels:
        raise ValueError(
            f"`views` must make views of the source's {source.channels} channel(s) (load_source(..., channels=)): "
            f"BYOLAugment(..., channels={source.channels}). Received: views with channels={augment.view1.channels}"
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

    if path not in ("auto", "native", "per_image"):
        raise ValueError(f"`path` must be 'auto', 'native' or 'per_image'. Received: path={path!r}")
    if path == "native" and not _one_size(source):
        raise ValueError(
            "`path='native'` needs images of one known size (a folder of same-size images, digits, a fixed-size TFDS set). "
            f"Received: path={path!r} for {source.name}"
        )
    if augment is None:
        native = False
    elif path == "auto":
        native = choose_path(source, augment.image_size) == "native"
    else:
        native = path == "native"
    if augment is None:
        decoded_bytes = source.num_examples * image_size * image_size * source.channels
    elif source.image_sizes is not None:
        decoded_bytes = int(np.sum(np.prod(source.image_sizes, axis=1))) * source.channels
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
        items = decoded_dataset(source, source.records, resize)
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
        if decode_late:
            # Each record's place in the stream, for naming the files that fail to decode (`reporting_gaps`).
            keys = tf.data.Dataset.zip((keys, positions.map(lambda position: tf.stack([epoch, position]))))
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
            def crop(record, key_where):
                (path, label), (key, where) = record, key_where
                crops = _crop_views_from_file(path, key, augment.views, source.max_pixels, source.channels)
                return crops, tf.cast(label, tf.int32), key, where
        else:
            @_plain_graph
            def crop(record, key_where):
                image, label = source.decode(*record)
                return (image if resize is None else resize(image)), tf.cast(label, tf.int32), *key_where

        def resolve(epoch, position):
            # The record at `position` of epoch `epoch`: the epoch's order replayed, records only (nothing decoded).
            ordered = items
            if shuffle:
                ordered = _shuffled(ordered, buffer, tf.random.experimental.stateless_fold_in(base_key, tf.constant(epoch, tf.int64)))
            return sources.record_name(source, next(iter(ordered.skip(position).take(1))), position)

        stream = stream.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # Files that fail after the scan: skipped (a TF log line gives the error), warned about and counted
        # (`Source.met_failures`, the run's summary).
        stream = stream.ignore_errors(log_warning=True)
        stream = sources.reporting_gaps(stream, batches_per_epoch * batch_size, (first_epoch, first_batch * batch_size),
                                         source.met_failures, resolve)
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
        if decode_late:
            # A file skipped when read (damaged behind a good header) leaves its batch to the next epoch's first
            # one, so that the declared length holds.
            batches = batches.concatenate(batches).take(batches_per_epoch)
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
        # size rather than a batch's (peak memory: docs/results.md). Each chunk draws from its own key.
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

    if augment is not None:
        @_plain_graph
        def make_views(images, labels, keys):
            return augment.augment_images(images, key_of(keys)) + (labels,)
    else:
        # A user's views (Keras or KerasCV layers, any callable) are converted by AutoGraph, as in their own
        # `Dataset.map`: KerasCV's layers branch in Python on tensors (`RandAugment`'s equalisation).
        def make_views(images, labels, keys):
            return _check_pair(views(images), views) + (labels,)

    batches = batches.map(make_views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)


def run_source(config):
    """The training `Source` of a pretraining run, opened as `byol-pretrain` opens it from its configuration.

    `load_source(config["data"], split=config["train_split"], data_dir=config["data_dir"],
    max_pixels=config["max_pixels"], verify=False, channels=config["channels"])`, then the first `limit_per_class`
    images of each class when that is set. The command line and the benchmarks call this one function, so a
    benchmark measures the data a user's command reads.

    A folder is not verified: its start-up is reading each file's header (its size, the pixel limit, a file
    that is no image), a fraction of decoding every file once (docs/design.md, "Choosing the path"), and the
    path is the same either way (`load_source`'s default too). A file whose header reads but whose data does not
    decode is skipped when the pipeline meets it, with a warning, and counted in `Source.met_failures` (the run's
    summary).

    Args:
        config: mapping, a run's configuration (`byol_keras.presets.get_preset` plus the command line's values):
            `data`, `train_split`, `data_dir`, `max_pixels` (None: `DEFAULT_MAX_PIXELS`), `limit_per_class`,
            `channels` (3 when absent: a configuration from before the field).

    Returns:
        `Source`.
    """
    source = load_source(config["data"], split=config["train_split"], data_dir=config["data_dir"],
                         max_pixels=config.get("max_pixels") or DEFAULT_MAX_PIXELS, verify=False,
                         channels=config.get("channels", 3))
    if config.get("limit_per_class"):
        source = subset_per_class(source, config["limit_per_class"])
    return source


def run_views(config, source, start_batch=0, **options):
    """The views of a pretraining run, built as `byol-pretrain` builds them: `(augment, dataset)`.

    `BYOLAugment(image_size, blur=blur, seed=seed, **augment, channels=channels)` and the endless stream
    `pretrain_dataset(source, augment, batch_size, seed=seed, repeat=True, start_batch=start_batch)`, every other
    argument of `pretrain_dataset` at its default. The command line and the benchmarks call this one function.

    Args:
        config: mapping, a run's configuration: `image_size`, `blur`, `seed`, `augment` (dict of `BYOLView`
            overrides), `batch_size`, `channels` (3 when absent).
        source: `Source`, from `run_source`.
        start_batch: int >= 0, where the stream starts (a resumed run's global step). Defaults to 0.
        **options: other `pretrain_dataset` arguments (`cache`, `path`, `views_on`), for measuring what a
            user's command does not do; none by default, and `byol-pretrain` passes none.

    Returns:
        `(BYOLAugment, tf.data.Dataset of (view1, view2, labels))`.
    """
    from byol_keras.views import BYOLAugment

    overrides = dict(config["augment"], channels=config.get("channels", 3))
    augment = BYOLAugment(config["image_size"], blur=config["blur"], seed=config["seed"], **overrides)
    dataset = pretrain_dataset(source, augment, config["batch_size"], seed=config["seed"], repeat=True,
                               start_batch=start_batch, **options)
    return augment, dataset


# `choose_path`: the native-size path when cutting a view by matrix products costs at most this many multiply-adds
# a channel (`view * width * (height + view)`). Measured (docs/design.md, "Choosing the path"): the native-size
# path is faster at 0.39 million (CIFAR's 32 px at 96) and below, the per-image path from 0.98 million (64 px at 96).
NATIVE_MAX_WORK = 500_000

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
    """Whether `pretrain_dataset` takes the native-size path for views of side `image_size`: `choose_path(...) == "native"`.

    Args:
        source: `Source`.
        image_size: int, the views' side.

    Returns:
        bool.
    """
    return choose_path(source, image_size) == "native"


def choose_path(source, image_size):
    """The path `pretrain_dataset` takes by default for views of side `image_size`: `"native"` or `"per_image"`.

    The faster of the two, from their measured costs (docs/design.md, "Choosing the path"). The native-size path
    cuts and resizes each view by two matrix products over the whole image, `image_size * width * (height +
    image_size)` multiply-adds a channel; the per-image path pays a fixed cost per image and its crops' resizes.
    `"native"` when every image of `source` has one known size (`Source.image_sizes`: read from the headers of a
    folder's files whether or not it is verified) and that product is at most `NATIVE_MAX_WORK`: CIFAR-10's 32-px
    images for views of 32 or 96 px (up to 110), digits; else `"per_image"` (STL-10's 96-px images at 96, 256-px tiles at 224,
    photos, ImageNet).

    Args:
        source: `Source`.
        image_size: int, the views' side.

    Returns:
        str, `"native"` or `"per_image"`.
    """
    if not _one_size(source):
        return "per_image"
    height, width = (int(x) for x in source.image_sizes[0])
    return "native" if image_size * width * (height + image_size) <= NATIVE_MAX_WORK else "per_image"


def _one_size(source):
    """Every image of `source` has the same known size."""
    sizes = source.image_sizes
    if sizes is None or len(sizes) == 0:
        return False
    return bool(np.all(np.asarray(sizes) == np.asarray(sizes[0])))


# --------------------------------------------------------------------------------------------------
# Pipeline pieces


def _resize_square(image, image_size):
    """Shorter side to `image_size`, centre square, uint8 `(image_size, image_size, channels)`.

    Images already of that size pass through untouched (CIFAR at 32 px is not resampled).
    """
    shape, channels = tf.shape(image), image.shape[-1]
    same = tf.logical_and(shape[0] == image_size, shape[1] == image_size)

    def resized():
        square = center_crop_resize(image, image_size, crop_fraction=1.0)
        return tf.cast(tf.round(square), tf.uint8)

    image = tf.cond(same, lambda: tf.cast(image, tf.uint8), resized)
    return tf.ensure_shape(image, [image_size, image_size, channels])


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
    return tf.saturate_cast(tf.round(resized), tf.uint8)  # clipped to 0..255 (one op fewer than clip, then cast)


def _crop_views_from_image(image, key, views):
    """Each view's window cut from a decoded `(h, w, channels)` image and resized: a tuple of uint8 crops."""
    shape = tf.shape(image)
    windows = _view_windows(shape[0], shape[1], key, views)
    channels = views[0].channels
    return tuple(
        _resize_crop(tf.slice(image, [window[0], window[1], 0], [window[2], window[3], channels]), view)
        for window, view in zip(windows, views)
    )


def _crop_views_from_file(path, key, views, max_pixels, channels=3):
    """Each view's window of an image file, resized: a JPEG decodes only the windows, others decode once.

    The file is checked first (`byol_keras.decoding.checked`: supported, not above `max_pixels`), by the same
    code as every other decode; a refused file raises an error naming it, which the pipeline skips and logs.
    `channels`: 3 (RGB) or 1 (the luma, as `byol_keras.decoding.decode_image` converts).
    """
    contents = tf.io.read_file(path)

    def jpeg_windows():
        checked_contents, _ = checked(contents, max_pixels, name=path)
        shape = tf.image.extract_jpeg_shape(checked_contents)
        windows = _view_windows(shape[0], shape[1], key, views)
        return tuple(
            _resize_crop(decode_jpeg_window(checked_contents, window, channels), view)
            for window, view in zip(windows, views)
        )

    def whole_image():
        return _crop_views_from_image(decode_image(contents, max_pixels, name=path, channels=channels), key, views)

    if not DECODE_JPEG_WINDOWS:
        return whole_image()
    return tf.cond(tf.io.is_jpeg(contents), jpeg_windows, whole_image)
