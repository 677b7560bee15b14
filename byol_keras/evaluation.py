"""Measuring a learned representation: the kNN classifier, the linear probe, and supervised heads.

Three protocols, from cheapest to the paper's:

- `knn_predict` / `knn_accuracy`: the weighted kNN monitor of solo-learn and lightly (cosine similarity,
  k = 200, votes weighted by `exp(sim / 0.1)`), cheap enough to run every epoch.
- `linear_probe`: a linear classifier trained on precomputed, frozen features.
- `classification_dataset` + `classifier_on_encoder` + `train_classifier` + `evaluate_classifier`: the
  paper's linear evaluation (frozen encoder, augmented images) and semi-supervised fine-tuning (trainable
  encoder on a `balanced_subset` of the labels); `byol_keras/cli/linear_eval.py` and `cli/finetune.py`
  are thin wrappers around them.

Features and images enter as NumPy arrays or tensors; `(images, labels)` tuples of NumPy arrays and
`tf.data` datasets yielding `(images, labels)` are both accepted wherever a labelled set is expected.
"""

import keras
import numpy as np
from keras import ops

from byol_keras.augment import center_crop_resize, normalize
from byol_keras.image_ops import official_crop_window
from byol_keras.validation import check_number, check_positive_float, check_positive_int, check_seed

# Random-resized-crop ranges of the paper's linear-evaluation training transform (the official code's
# `_decode_and_random_crop`, the same crop and ranges as the pretraining views).
_CROP_AREA_RANGE = (0.08, 1.0)
_CROP_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)


def _check_knn_arguments(bank_features, bank_labels, query_features, num_classes, k, temperature):
    check_positive_int("num_classes", num_classes)
    check_positive_int("k", k)
    check_positive_float("temperature", temperature)
    bank_shape = tuple(ops.shape(bank_features))
    query_shape = tuple(ops.shape(query_features))
    labels_shape = tuple(ops.shape(bank_labels))
    if len(bank_shape) != 2 or bank_shape[0] == 0:
        raise ValueError(
            "`bank_features` must be a non-empty 2D array (bank_size, dim). "
            f"Received: bank_features.shape={bank_shape}"
        )
    if len(query_shape) != 2 or query_shape[1] != bank_shape[1]:
        raise ValueError(
            "`query_features` must be a 2D array (num_queries, dim) with the dim of `bank_features` "
            f"({bank_shape[1]}). Received: query_features.shape={query_shape}"
        )
    if labels_shape != (bank_shape[0],):
        raise ValueError(
            f"`bank_labels` must have shape ({bank_shape[0]},), one label per bank row. "
            f"Received: bank_labels.shape={labels_shape}"
        )


def _knn_votes(bank_features, bank_labels, query_features, num_classes, k, temperature, stable):
    """Per-class kNN votes of one chunk of queries (the maths shared by `knn_votes` and `knn_predict`).

    Args:
        bank_features: float32 tensor `(bank_size, dim)`, already L2-normalised.
        bank_labels: int32 tensor `(bank_size,)`.
        query_features: float32 tensor `(num_queries, dim)`, already L2-normalised.
        num_classes: int.
        k: int, already clipped to `bank_size`.
        temperature: float > 0.
        stable: bool. If True, every query's weights are divided by `exp(max_sim / temperature)`, a
            per-query constant that leaves the argmax unchanged but keeps `exp` finite for small
            temperatures (`exp(1 / 0.01)` overflows float32).

    Returns:
        float32 tensor `(num_queries, num_classes)`.
    """
    similarity = ops.matmul(query_features, ops.transpose(bank_features))  # (queries, bank)
    top_similarity, top_index = ops.top_k(similarity, k)  # (queries, k), sorted descending
    if stable:
        top_similarity = top_similarity - top_similarity[:, :1]
    weights = ops.exp(top_similarity / temperature)
    neighbour_labels = ops.take(bank_labels, top_index)  # (queries, k)
    # Sum the weights per (query, class) with one segment_sum over `query * num_classes + label`: this
    # never materialises the (queries, k, num_classes) one-hot tensor, which is 800 MB for ImageNet.
    num_queries = ops.shape(query_features)[0]
    row = ops.expand_dims(ops.arange(num_queries, dtype="int32"), -1)
    segment = ops.reshape(row * num_classes + neighbour_labels, (-1,))
    votes = ops.segment_sum(
        ops.reshape(weights, (-1,)), segment, num_segments=num_queries * num_classes
    )
    return ops.reshape(votes, (num_queries, num_classes))


def _prepare_knn_inputs(bank_features, bank_labels, query_features, num_classes, k, temperature):
    _check_knn_arguments(bank_features, bank_labels, query_features, num_classes, k, temperature)
    bank = ops.normalize(ops.cast(bank_features, "float32"), axis=-1, epsilon=1e-12)
    labels = ops.cast(ops.convert_to_tensor(bank_labels), "int32")
    queries = ops.normalize(ops.cast(query_features, "float32"), axis=-1, epsilon=1e-12)
    # A bank smaller than k votes with all of its rows.
    k = min(int(k), int(ops.shape(bank)[0]))
    return bank, labels, queries, k


def knn_votes(bank_features, bank_labels, query_features, num_classes, k=200, temperature=0.1):
    """The weighted kNN votes per class: `Σ_{j ∈ top-k(q)} exp(cos(q, b_j) / T) · [y_j = c]`.

    The kNN monitor of solo-learn and lightly (Wu et al. 2018, "Unsupervised Feature Learning via
    Non-Parametric Instance Discrimination"): cosine similarity between L2-normalised features, the k most
    similar bank rows vote for their class with weight `exp(similarity / temperature)`.

    Example:

    >>> bank = [[1.0, 0.0], [0.0, 1.0]]
    >>> votes = knn_votes(bank, [0, 1], [[1.0, 0.0]], num_classes=2, k=5, temperature=1.0)
    >>> [round(float(v), 4) for v in votes[0]]
    [2.7183, 1.0]

    Args:
        bank_features: float `(bank_size, dim)` array or tensor; need not be normalised.
        bank_labels: int `(bank_size,)` array or tensor, values in `[0, num_classes)`.
        query_features: float `(num_queries, dim)` array or tensor.
        num_classes: int, number of classes.
        k: int, number of neighbours; clipped to `bank_size`. Defaults to 200.
        temperature: float > 0. Defaults to 0.1.

    Returns:
        float32 tensor `(num_queries, num_classes)` of exact (unrescaled) votes.
    """
    bank, labels, queries, k = _prepare_knn_inputs(
        bank_features, bank_labels, query_features, num_classes, k, temperature
    )
    return _knn_votes(bank, labels, queries, num_classes, k, temperature, stable=False)


def knn_predict(
    bank_features, bank_labels, query_features, num_classes, k=200, temperature=0.1, batch_size=256
):
    """Weighted kNN class predictions: the argmax over classes of `knn_votes`, batched over queries.

    Queries are processed `batch_size` at a time so that the `(batch_size, bank_size)` similarity matrix,
    not the `(num_queries, bank_size)` one, bounds the memory.

    Example:

    >>> bank = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]
    >>> [int(p) for p in knn_predict(bank, [0, 0, 1], [[0.1, 1.0], [1.0, 0.2]], num_classes=2, k=1)]
    [1, 0]

    Args:
        bank_features: float `(bank_size, dim)` array or tensor; need not be normalised.
        bank_labels: int `(bank_size,)` array or tensor, values in `[0, num_classes)`.
        query_features: float `(num_queries, dim)` array or tensor.
        num_classes: int, number of classes.
        k: int, number of neighbours; clipped to `bank_size`. Defaults to 200.
        temperature: float > 0. Defaults to 0.1.
        batch_size: int, queries per chunk. Defaults to 256.

    Returns:
        int32 tensor `(num_queries,)`. Ties go to the lower class index.
    """
    check_positive_int("batch_size", batch_size)
    bank, labels, queries, k = _prepare_knn_inputs(
        bank_features, bank_labels, query_features, num_classes, k, temperature
    )
    num_queries = int(ops.shape(queries)[0])
    predictions = []
    for start in range(0, num_queries, batch_size):
        votes = _knn_votes(
            bank, labels, queries[start : start + batch_size], num_classes, k, temperature, stable=True
        )
        predictions.append(ops.cast(ops.argmax(votes, axis=-1), "int32"))
    if not predictions:
        return ops.zeros((0,), dtype="int32")
    return ops.concatenate(predictions, axis=0)


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


def knn_accuracy(
    encoder, bank, queries, k=200, temperature=0.1, batch_size=256, num_classes=None, verbose=0
):
    """Top-1 accuracy of the weighted kNN classifier on `encoder` features.

    Example:

    >>> encoder = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.GlobalAveragePooling2D()])
    >>> images = np.stack([np.full((4, 4, 3), v, "float32") for v in (1, 2, -1, -2)])
    >>> knn_accuracy(encoder, (images, [0, 0, 1, 1]), (-images, [1, 1, 0, 0]), k=1)
    1.0

    Args:
        encoder: `keras.Model` mapping preprocessed images to `(batch, dim)` features.
        bank: labelled memory bank, `(images, labels)` arrays or a dataset of `(images, labels)`; images
            already preprocessed (ImageNet-normalised float32).
        queries: labelled queries, same forms as `bank`.
        k: int, neighbours. Defaults to 200.
        temperature: float > 0. Defaults to 0.1.
        batch_size: int, images per forward pass and queries per kNN chunk. Defaults to 256.
        num_classes: int or None. Defaults to None: one more than the largest label seen.
        verbose: int, 1 shows progress bars. Defaults to 0.

    Returns:
        Python float in [0, 1].
    """
    bank_features, bank_labels = embed_labelled(encoder, bank, batch_size, verbose)
    query_features, query_labels = embed_labelled(encoder, queries, batch_size, verbose)
    if num_classes is None:
        num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    predictions = knn_predict(
        bank_features, bank_labels, query_features, num_classes, k, temperature, batch_size
    )
    return float(np.mean(ops.convert_to_numpy(predictions) == query_labels))


def _top_k_metrics(num_classes):
    # With fewer than 5 classes "top-5" is trivially 1; it is still reported, as min(5, classes).
    return [
        keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
    ]


def _sgd(learning_rate, steps, momentum, nesterov, weight_decay):
    # Cosine decay to 0 over the whole run; `steps=None` (unknown length) keeps the rate constant.
    schedule = (
        keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
        if steps
        else learning_rate
    )
    return keras.optimizers.SGD(
        learning_rate=schedule,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay or None,
    )


def linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    num_classes,
    epochs=100,
    batch_size=256,
    learning_rate=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=0.0,
    standardize=True,
    verbose=0,
):
    """Train a linear classifier on frozen, precomputed features; report test top-1 and top-5.

    SGD with Nesterov momentum 0.9, no weight decay and a cosine-decayed learning rate, as in the paper's
    linear protocol ("SGD with Nesterov momentum ... no weight decay"), minus the image augmentation that
    precomputed features cannot have (use `train_classifier` for that).

    Example:

    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]] * 8)
    >>> y = np.array([0, 1] * 8)
    >>> linear_probe(x, y, x, y, num_classes=2, epochs=20, batch_size=4)["top1"]
    1.0

    Args:
        train_features: float array `(n_train, dim)`.
        train_labels: int array `(n_train,)`.
        test_features: float array `(n_test, dim)`.
        test_labels: int array `(n_test,)`.
        num_classes: int.
        epochs: int. Defaults to 100.
        batch_size: int. Defaults to 256.
        learning_rate: float, peak learning rate. Defaults to 0.1.
        momentum: float. Defaults to 0.9.
        nesterov: bool. Defaults to True.
        weight_decay: float. Defaults to 0.0 (the paper's value).
        standardize: bool. If True, features are shifted and scaled by the training mean and std per
            dimension. A linear layer can absorb any per-dimension affine map, so the classifier family is
            unchanged; only SGD's conditioning improves (pooled ReLU features have arbitrary scales).
            Defaults to True.
        verbose: int, Keras `fit` verbosity. Defaults to 0.

    Returns:
        Dict `{"top1": float, "top5": float}` on the test features.
    """
    check_positive_int("num_classes", num_classes)
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    check_positive_float("learning_rate", learning_rate)
    train_features = np.asarray(train_features, dtype="float32")
    test_features = np.asarray(test_features, dtype="float32")
    train_labels = np.asarray(train_labels).astype("int64").reshape(-1)
    test_labels = np.asarray(test_labels).astype("int64").reshape(-1)
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError(
            "`train_features` and `test_features` must be 2D (n, dim). Received: "
            f"train_features.shape={train_features.shape}, test_features.shape={test_features.shape}"
        )
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise ValueError(
            "Features and labels must have the same length. Received: "
            f"{len(train_features)} train features, {len(train_labels)} train labels, "
            f"{len(test_features)} test features, {len(test_labels)} test labels"
        )
    if standardize:
        mean = train_features.mean(axis=0)
        std = train_features.std(axis=0) + 1e-6
        train_features = (train_features - mean) / std
        test_features = (test_features - mean) / std
    classifier = keras.Sequential(
        [keras.Input((train_features.shape[1],)), keras.layers.Dense(num_classes)],
        name="linear_probe",
    )
    steps = epochs * int(np.ceil(len(train_features) / batch_size))
    classifier.compile(
        optimizer=_sgd(learning_rate, steps, momentum, nesterov, weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=_top_k_metrics(num_classes),
    )
    classifier.fit(
        train_features, train_labels, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose
    )
    results = classifier.evaluate(
        test_features, test_labels, batch_size=batch_size, verbose=0, return_dict=True
    )
    return {"top1": float(results["top1"]), "top5": float(results["top5"])}


def balanced_subset(labels, fraction, seed):
    """Indices of a class-balanced, seeded subset holding about `fraction` of the labelled examples.

    BYOL's semi-supervised protocol fine-tunes on the 1 % and 10 % label subsets of SimCLR (Chen et
    al. 2020), which are drawn class-balanced. Here every class gets the same count,
    `max(1, round(fraction · n / num_classes))` (a class with fewer examples gives all it has), drawn
    without replacement by a NumPy generator seeded with `seed`; the same arguments always give the same
    indices.

    Example:

    >>> balanced_subset([0, 0, 0, 0, 1, 1, 1, 1], fraction=0.5, seed=0).shape
    (4,)

    Args:
        labels: int array `(n,)`.
        fraction: float in (0, 1].
        seed: int.

    Returns:
        Sorted int64 array of indices into `labels`.
    """
    check_number("fraction", fraction, 0, 1, low_open=True)
    check_seed("seed", seed, allow_none=False)
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        raise ValueError("`labels` must not be empty. Received: labels.shape=(0,)")
    classes = np.unique(labels)
    per_class = max(1, int(round(fraction * labels.size / len(classes))))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        take = min(per_class, members.size)
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen)).astype("int64")


def _crop_window(height, width, shape=()):
    """Random windows of the linear-evaluation training crop (`image_ops.official_crop_window`).

    Args:
        height, width: float32 scalar tensors (or numbers), the image size in pixels.
        shape: the shape of the draws: `()` for one image (the training transform), `(n,)` for n windows.

    Returns:
        float32 tensors `(y1, x1, crop_height, crop_width)` of `shape`, in whole pixels.
    """
    import tensorflow as tf

    uniforms = [tf.random.uniform(shape) for _ in range(4)]
    return official_crop_window(uniforms, height, width, _CROP_AREA_RANGE, _CROP_ASPECT_RANGE)


def _random_resized_crop(image, image_size):
    """The official linear-evaluation training crop of one image (`_crop_window`), resized.

    Args:
        image: float32 tensor `(h, w, 3)` in [0, 255].
        image_size: int.

    Returns:
        float32 tensor `(image_size, image_size, 3)` in [0, 255].
    """
    import tensorflow as tf

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
    crop_fraction=0.875,
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
        data: `(images, labels)` arrays (uint8 or float in [0, 255], `(n, h, w, 3)`) or an unbatched
            `tf.data.Dataset` of `(image, label)` pairs (images may differ in size), preferably of
            known cardinality.
        image_size: int, side of the square output images.
        batch_size: int.
        training: bool, selects the transform; training also shuffles.
        crop_fraction: float in (0, 1], the test transform's centre-crop fraction. Defaults to 0.875
            (the paper's 224 / 256); 1.0 keeps the whole image, as usual for 32 px CIFAR.
        shuffle_buffer: int. Defaults to 10 000.
        repeat: bool, repeat indefinitely (then pass `steps_per_epoch` to `fit`). Defaults to False.
        seed: int or None, shuffle seed. Defaults to None.

    Returns:
        `tf.data.Dataset` of `(images, labels)`: float32 `(batch, image_size, image_size, 3)`, int64
        `(batch,)`.
    """
    import tensorflow as tf

    check_positive_int("image_size", image_size)
    check_positive_int("batch_size", batch_size)
    if _is_dataset(data):
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
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def transform(image, label):
        image = tf.cast(image, tf.float32)
        if training:
            image = _random_resized_crop(image, image_size)
            image = tf.image.random_flip_left_right(image)
        else:
            image = center_crop_resize(image, image_size, crop_fraction)
        return image, tf.cast(label, tf.int64)

    dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size).map(
        lambda images, labels: (normalize(images), labels), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def default_crop_fraction(image_size):
    """The test transform's centre-crop fraction for an image size: 0.875 from 96 px up, else 1.0.

    The paper's 224 / 256 crop at ImageNet resolution; at CIFAR's 32 px the usual practice (solo-learn,
    lightly) is no crop at all, since an eighth of a tiny image is too much to lose.

    Args:
        image_size: int.

    Returns:
        float.
    """
    return 0.875 if image_size >= 96 else 1.0


def classifier_on_encoder(encoder, num_classes, freeze, image_size=None, name=None):
    """An encoder followed by one `Dense(num_classes)` layer producing logits.

    With `freeze=True` (the linear protocol) the encoder is set non-trainable and called with
    `training=False`, so its BatchNorm layers use their moving statistics ("frozen encoder with BN in
    inference mode"). With `freeze=False` (fine-tuning) it trains, BatchNorm included.

    Args:
        encoder: `keras.Model` mapping images `(batch, h, w, 3)` to pooled features `(batch, dim)`.
        num_classes: int.
        freeze: bool.
        image_size: int or None, side of the input images; None leaves height and width unknown.
            Defaults to None.
        name: str or None, model name. Defaults to "linear_classifier" / "finetune_classifier".

    Returns:
        `keras.Model` from images to logits `(batch, num_classes)`.
    """
    check_positive_int("num_classes", num_classes)
    if freeze:
        # `trainable = False` also puts Keras BatchNormalization in inference mode; `training=False`
        # below makes that explicit and independent of the flag.
        encoder.trainable = False
    inputs = keras.Input((image_size, image_size, 3))
    features = encoder(inputs, training=False) if freeze else encoder(inputs)
    logits = keras.layers.Dense(num_classes, name="classifier")(features)
    if name is None:
        name = "linear_classifier" if freeze else "finetune_classifier"
    return keras.Model(inputs, logits, name=name)


def train_classifier(
    model,
    train_dataset,
    epochs,
    learning_rate,
    momentum=0.9,
    nesterov=True,
    weight_decay=0.0,
    steps_per_epoch=None,
    validation_dataset=None,
    callbacks=None,
    verbose=1,
):
    """Train `model` with softmax cross-entropy and SGD (Nesterov momentum 0.9 by default).

    The learning rate decays with a cosine to 0 over `epochs` when the number of steps is known (from
    `steps_per_epoch` or the dataset's cardinality), otherwise it stays constant.

    Args:
        model: `keras.Model` from images to logits.
        train_dataset: batched `tf.data.Dataset` of `(images, labels)`.
        epochs: int.
        learning_rate: float, peak learning rate.
        momentum: float. Defaults to 0.9.
        nesterov: bool. Defaults to True.
        weight_decay: float. Defaults to 0.0 (the paper's linear protocol has none).
        steps_per_epoch: int or None; required with a repeating dataset. Defaults to None.
        validation_dataset: batched dataset or None. Defaults to None.
        callbacks: list of Keras callbacks or None. Defaults to None.
        verbose: int, Keras `fit` verbosity (1 = progress bar). Defaults to 1.

    Returns:
        The Keras `History`.
    """
    check_positive_int("epochs", epochs)
    check_positive_float("learning_rate", learning_rate)
    if steps_per_epoch is None:
        cardinality = int(train_dataset.cardinality())
        steps = epochs * cardinality if cardinality > 0 else None
    else:
        check_positive_int("steps_per_epoch", steps_per_epoch)
        steps = epochs * steps_per_epoch
    num_classes = int(model.output.shape[-1])
    model.compile(
        optimizer=_sgd(learning_rate, steps, momentum, nesterov, weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=_top_k_metrics(num_classes),
    )
    return model.fit(
        train_dataset,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_dataset,
        callbacks=callbacks,
        verbose=verbose,
        # The dataset shuffles itself; Keras 3.15 warns about its default `shuffle=True` otherwise.
        shuffle=False,
    )


def evaluate_classifier(model, test_dataset, verbose=0):
    """Top-1 and top-5 accuracy of a classifier (built by `classifier_on_encoder`) on a dataset.

    Args:
        model: `keras.Model` from images to logits.
        test_dataset: batched, finite `tf.data.Dataset` of `(images, labels)`.
        verbose: int. Defaults to 0.

    Returns:
        Dict `{"top1": float, "top5": float}`.
    """
    top1, top5 = _top_k_metrics(int(model.output.shape[-1]))
    cardinality = int(test_dataset.cardinality())
    progbar = keras.utils.Progbar(cardinality if cardinality >= 0 else None) if verbose else None
    for step, (images, labels) in enumerate(test_dataset):
        # `predict_on_batch` runs one compiled inference function (training=False) for every batch.
        logits = model.predict_on_batch(images)
        top1.update_state(labels, logits)
        top5.update_state(labels, logits)
        if progbar is not None:
            progbar.update(step + 1)
    return {"top1": float(top1.result()), "top5": float(top5.result())}


def transfer(
    encoder,
    train_data,
    test_data,
    num_classes,
    image_size,
    freeze,
    epochs,
    batch_size=256,
    learning_rate=0.1,
    weight_decay=0.0,
    crop_fraction=None,
    seed=0,
    verbose=1,
):
    """Train a linear classifier on `encoder`'s features and measure it on `test_data`: the paper's two
    transfer protocols, which differ only in `freeze`.

    The linear protocol (`freeze=True`) trains the linear layer alone on the frozen encoder, BatchNorm in
    inference mode; fine-tuning (`freeze=False`) trains the encoder with it, BatchNorm included, in place.
    Both: SGD with Nesterov momentum 0.9 and a cosine decay to 0 (`train_classifier`), a random resized crop
    and a flip for training images (`classification_dataset`), the centre crop for test images.

    Args:
        encoder: `keras.Model` from ImageNet-normalised images to pooled features `(batch, dim)`.
        train_data: `(images, labels)` arrays in [0, 255] or an unbatched dataset of `(image, label)`.
        test_data: same forms as `train_data`.
        num_classes: int.
        image_size: int, side of the encoder's input images.
        freeze: bool, True for the linear protocol, False for fine-tuning.
        epochs: int.
        batch_size: int. Defaults to 256.
        learning_rate: float, peak SGD learning rate. Defaults to 0.1.
        weight_decay: float. Defaults to 0.0 (the paper's linear protocol has none).
        crop_fraction: float or None, the test centre-crop fraction; a run's is its config's
            "crop_fraction". Defaults to None: `default_crop_fraction(image_size)`.
        seed: int, the training shuffle and crops. Defaults to 0.
        verbose: int, 1 shows progress bars. Defaults to 1.

    Returns:
        Dict `{"top1": float, "top5": float}` on the test set.
    """
    if crop_fraction is None:
        crop_fraction = default_crop_fraction(image_size)
    train = classification_dataset(train_data, image_size, batch_size, training=True, seed=seed)
    test = classification_dataset(test_data, image_size, batch_size, training=False, crop_fraction=crop_fraction)
    model = classifier_on_encoder(encoder, num_classes, freeze=freeze, image_size=image_size)
    train_classifier(
        model,
        train,
        epochs=epochs,
        learning_rate=learning_rate,
        momentum=0.9,
        nesterov=True,
        weight_decay=weight_decay,
        verbose=verbose,
    )
    return evaluate_classifier(model, test, verbose=verbose)
