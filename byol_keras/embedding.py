"""An encoder's features of a set of images, in inference mode: `embed` and `embed_labelled`.

What the kNN classifier (`byol_keras.knn`), the kNN monitor and the embedding projector
(`byol_keras.callbacks`) and the linear probe on precomputed features (`byol_keras.transfer.linear_probe`)
start from. Images enter as NumPy arrays or tensors; `(images, labels)` tuples of NumPy arrays and
`tf.data` datasets yielding `(images, labels)`, batched or not, are both accepted.
"""

import keras
import numpy as np
from keras import ops

from byol_keras.validation import check_positive_int


def _is_dataset(data):
    import tensorflow as tf

    return isinstance(data, tf.data.Dataset)


def _batched(dataset, batch_size):
    """Batch a dataset whose images are single `(h, w, c)` images; leave an already batched one alone."""
    spec = dataset.element_spec
    image_spec = spec[0] if isinstance(spec, (tuple, list)) else spec
    if image_spec.shape.rank == 3:
        return dataset.batch(batch_size)
    return dataset


def _encode(encoder, images):
    # `predict_on_batch` reuses one compiled inference function (training=False, so BatchNorm uses its
    # moving statistics) across calls; a plain layer is called directly in inference mode.
    if isinstance(encoder, keras.Model):
        return np.asarray(encoder.predict_on_batch(images))
    return ops.convert_to_numpy(encoder(images, training=False))


def embed_labelled(encoder, data, batch_size=256, verbose=0):
    """Embed a labelled set with `encoder` in inference mode, keeping features and labels aligned.

    Args:
        encoder: `keras.Model` (or layer) mapping preprocessed images `(batch, h, w, 3)` to `(batch, dim)`.
        data: `(images, labels)` tuple of arrays, or a `tf.data.Dataset` yielding `(images, labels)`
            either unbatched (batched here with `batch_size`) or already batched. Iterated once, so a
            shuffling dataset still gives aligned pairs.
        batch_size: int, images per forward pass. Defaults to 256.
        verbose: int, 1 shows a progress bar. Defaults to 0.

    Returns:
        Tuple `(features, labels)`: float32 array `(n, dim)` and int64 array `(n,)`.
    """
    check_positive_int("batch_size", batch_size)
    if _is_dataset(data):
        batches = _batched(data, batch_size)
        total = int(batches.cardinality())
        total = total if total >= 0 else None
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = np.asarray(data[0]), np.asarray(data[1])
        if len(images) != len(labels):
            raise ValueError(
                "`data` must be `(images, labels)` of equal length. "
                f"Received: len(images)={len(images)}, len(labels)={len(labels)}"
            )
        batches = [
            (images[i : i + batch_size], labels[i : i + batch_size])
            for i in range(0, len(images), batch_size)
        ]
        total = len(batches)
    else:
        raise TypeError(
            "`data` must be an `(images, labels)` tuple or a tf.data.Dataset of (images, labels). "
            f"Received: data={type(data).__name__}"
        )
    progbar = keras.utils.Progbar(total, unit_name="batch") if verbose else None
    features, all_labels = [], []
    for step, (images, labels) in enumerate(batches):
        features.append(_encode(encoder, images).astype("float32"))
        all_labels.append(np.asarray(labels).astype("int64").reshape(-1))
        if progbar is not None:
            progbar.update(step + 1)
    if not features:
        raise ValueError("`data` is empty: there is nothing to embed.")
    return np.concatenate(features), np.concatenate(all_labels)


def embed(encoder, images_or_dataset, batch_size=256, verbose=0):
    """Embed images with `encoder` in inference mode (`training=False`).

    Args:
        encoder: `keras.Model` (or layer) mapping preprocessed images `(batch, h, w, 3)` to `(batch, dim)`.
        images_or_dataset: array `(n, h, w, 3)` of preprocessed images, or a `tf.data.Dataset` yielding
            images or `(images, labels)` (labels are ignored), batched or not.
        batch_size: int, images per forward pass. Defaults to 256.
        verbose: int, 1 shows a progress bar. Defaults to 0.

    Returns:
        float32 array `(n, dim)`.
    """
    check_positive_int("batch_size", batch_size)
    if _is_dataset(images_or_dataset):
        dataset = images_or_dataset
        if not isinstance(dataset.element_spec, (tuple, list)):
            # Give image-only datasets a dummy label so there is a single code path.
            dataset = dataset.map(lambda images: (images, 0))
        return embed_labelled(encoder, dataset, batch_size, verbose)[0]
    images = np.asarray(images_or_dataset)
    return embed_labelled(encoder, (images, np.zeros(len(images))), batch_size, verbose)[0]
