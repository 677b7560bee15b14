"""The weighted kNN classifier on an encoder's features: the cheap measure of a representation.

The kNN monitor of solo-learn and lightly (cosine similarity, k = 200, votes weighted by
`exp(sim / 0.1)`), cheap enough to run every epoch (`byol_keras.callbacks.KNNMonitor`):

- `knn_votes` / `knn_predict`: the maths, on features (NumPy arrays or tensors).
- `knn_accuracy`: top-1 of an encoder's features (`byol_keras.embedding.embed_labelled`), a labelled bank
  against labelled queries.
"""

import numpy as np
from keras import ops

from byol_keras.embedding import embed_labelled
from byol_keras.validation import check_positive_float, check_positive_int


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
