"""The images evaluation sees: labelled arrays for a kNN bank, and the supervised evaluation pipeline.

- `load_arrays`: the first N labelled examples of each class of a `Source`, centre-cropped (the evaluation
  transform) into uint8 NumPy arrays: the kNN monitor's bank and queries, the raw-pixel reference.
- `classification_dataset`: the paper's linear-evaluation transforms as a batched `tf.data` pipeline, a
  random resized crop and a flip for training, the centre crop for testing (`byol_keras.transfer`).

The test centre crop: `crop_fraction=None` is `byol_keras.preprocessing.default_crop_fraction(image_size)`; a
pretraining run records its value in `config.json` for every later step to read.

The pretraining views are made elsewhere (`byol_keras.data.pretrain_dataset`).
"""

import numpy as np
import tensorflow as tf

from byol_keras.preprocessing import center_crop_resize, normalize, resolve_crop_fraction
from byol_keras.views.geometry import official_crop_window
from byol_keras.sources import check_source, decoded_dataset, warn_small_images
from byol_keras.subsets import first_per_class, keep_elements
from byol_keras.validation import check_positive_int

# Random-resized-crop ranges of the paper's linear-evaluation training transform (the official code's
# `_decode_and_random_crop`, the same crop and ranges as the pretraining views).
_CROP_AREA_RANGE = (0.08, 1.0)
_CROP_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)


def load_arrays(source, image_size, limit_per_class=None, crop_fraction=None):
    """Load labelled examples into memory, e.g. as a kNN bank: the first `limit_per_class` per class.

    Images get the evaluation transform (`center_crop_resize`) and are kept as uint8 so that a bank
    stays small; normalise them with `byol_keras.preprocessing.normalize` before the encoder. Examples
    without a label (`-1`) are left out when `limit_per_class` is given. For folders and digits the
    subset is picked from the record labels before decoding; for TFDS the source is read in order
    until every class is full.

    Args:
        source: `Source` from `load_source`.
        image_size: int, side of the output images.
        limit_per_class: int or None, keep the first this many examples of each class in source
            order; None keeps everything. Defaults to None.
        crop_fraction: float in (0, 1], or None. Defaults to None: `default_crop_fraction(image_size)` (the
            paper's 224/256 from 96 px up; 1.0 below, where the crop would cut away an eighth of a tiny image).

    Returns:
        `(images, labels)`: uint8 numpy `(n, image_size, image_size, channels)` (the source's channels) and int32
        numpy `(n,)`.
    """
    check_source(source)
    check_positive_int("image_size", image_size)
    crop_fraction = resolve_crop_fraction(crop_fraction, image_size)
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
        records = keep_elements(records, first_per_class(source.labels, limit_per_class))

    def transform(image):
        image = center_crop_resize(image, image_size, crop_fraction)
        return tf.cast(tf.round(image), tf.uint8)

    images, labels = [], []
    counts = np.zeros(max(source.num_classes, 1), dtype=np.int64)
    subset = limit_per_class is not None and source.labels is not None
    for batch_images, batch_labels in decoded_dataset(source, records, transform, not subset).batch(256):
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


def _crop_window(height, width, shape=()):
    """Random windows of the linear-evaluation training crop (`views.geometry.official_crop_window`).

    Args:
        height, width: float32 scalar tensors (or numbers), the image size in pixels.
        shape: the shape of the draws: `()` for one image (the training transform), `(n,)` for n windows.

    Returns:
        float32 tensors `(y1, x1, crop_height, crop_width)` of `shape`, in whole pixels.
    """
    uniforms = [tf.random.uniform(shape) for _ in range(4)]
    return official_crop_window(uniforms, height, width, _CROP_AREA_RANGE, _CROP_ASPECT_RANGE)


def _random_resized_crop(image, image_size):
    """The official linear-evaluation training crop of one image (`_crop_window`), resized.

    Args:
        image: float32 tensor `(h, w, channels)` in [0, 255].
        image_size: int.

    Returns:
        float32 tensor `(image_size, image_size, channels)` in [0, 255].
    """
    shape = tf.shape(image)
    window = _crop_window(tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32))
    offset_h, offset_w, crop_h, crop_w = [tf.cast(v, tf.int32) for v in window]
    crop = tf.slice(image, tf.stack([offset_h, offset_w, 0]), tf.stack([crop_h, crop_w, shape[2]]))
    crop = tf.image.resize(crop, (image_size, image_size), method="bicubic", antialias=True)
    # Bicubic resampling overshoots at edges; keep the [0, 255] range that `normalize` expects.
    return tf.clip_by_value(crop, 0.0, 255.0)


def classification_dataset(
    data,
    image_size,
    batch_size,
    training,
    crop_fraction=None,
    shuffle_buffer=10_000,
    repeat=False,
    seed=None,
):
    """A batched `tf.data` pipeline for supervised evaluation, with the paper's transforms.

    Training: random resized crop (area 0.08–1, aspect 3/4–4/3) and horizontal flip. Testing: resize the
    shorter side to `image_size / crop_fraction` and crop the centre (the paper's 256 → 224). Both end
    with the ImageNet normalisation used in pretraining. Array examples labelled -1 (unlabelled) are
    dropped; a dataset must carry labels >= 0 only. A dataset is not filtered here, because filtering
    makes its length unknown, and Keras 3.15 then ends the first epoch with a misleading "input ran
    out of data" warning and the cosine schedule has no horizon.

    Args:
        data: `(images, labels)` arrays (uint8 or float in [0, 255], `(n, h, w, channels)`: 3, or 1 for
            grayscale) or an unbatched `tf.data.Dataset` of `(image, label)` pairs (images may differ in size, of
            one known number of channels), preferably of known cardinality.
        image_size: int, side of the square output images.
        batch_size: int.
        training: bool, selects the transform; training also shuffles.
        crop_fraction: float in (0, 1], the test transform's centre-crop fraction, or None. Defaults to None:
            `default_crop_fraction(image_size)` (the paper's 224 / 256 from 96 px up, the whole image below).
        shuffle_buffer: int. Defaults to 10 000.
        repeat: bool, repeat indefinitely (then pass `steps_per_epoch` to `fit`). Defaults to False.
        seed: int or None, shuffle seed. Defaults to None.

    Returns:
        `tf.data.Dataset` of `(images, labels)`: float32 `(batch, image_size, image_size, channels)`, int64
        `(batch,)`.
    """
    check_positive_int("image_size", image_size)
    check_positive_int("batch_size", batch_size)
    if isinstance(data, tf.data.Dataset):
        dataset = data
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = np.asarray(data[0]), np.asarray(data[1]).reshape(-1)
        labelled = labels >= 0
        dataset = tf.data.Dataset.from_tensor_slices((images[labelled], labels[labelled]))
    else:
        raise TypeError(
            "`data` must be an `(images, labels)` tuple or a tf.data.Dataset of (image, label). "
            f"Received: data={type(data).__name__}"
        )
    # Known before the crops, whose sizes are computed at run time: `normalize` standardises per channel.
    image_shape = dataset.element_spec[0].shape
    channels = image_shape[-1] if image_shape.rank else None
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def transform(image, label):
        image = tf.cast(image, tf.float32)
        if training:
            image = _random_resized_crop(image, image_size)
            image = tf.image.random_flip_left_right(image)
        else:
            image = center_crop_resize(image, image_size, crop_fraction)
        return tf.ensure_shape(image, (image_size, image_size, channels)), tf.cast(label, tf.int64)

    dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size).map(
        lambda images, labels: (normalize(images), labels), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
