"""Choosing examples: the one subset of a dataset, the first N of each class, a seeded class-balanced fraction.

- `keep_elements`: the elements of a `tf.data.Dataset` a mask keeps, with the length still known; every
  subset the library takes of data it does not hold in memory goes through it.
- `subset_per_class`: a `Source` restricted to the first N records of each class (`--limit-per-class`).
- `balanced_subset`: the indices of a seeded, class-balanced fraction of the labels (the semi-supervised
  protocol's 1 % and 10 % subsets, `byol-finetune`).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from byol_keras.validation import check_number, check_positive_int, check_seed


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

    # Traced as written (no Python control flow on tensors): AutoGraph could not read two lambdas on one line,
    # and said so on the console at every call.
    @tf.autograph.experimental.do_not_convert
    def kept_index(index, element):
        return mask[index]

    @tf.autograph.experimental.do_not_convert
    def without_index(index, element):
        return element

    kept = dataset.enumerate().filter(kept_index).map(without_index)
    return kept.apply(tf.data.experimental.assert_cardinality(int(keep.sum())))


def subset_per_class(source, limit):
    """The same source restricted to the first `limit` records of each class, in the source's order.

    Example:

    >>> from byol_keras.sources import load_source
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
    return select(source, first_per_class(source.labels, limit))


def select(source, keep):
    """The same source restricted to the records where `keep` is True, in the source's order.

    Args:
        source: `Source` whose labels are known up front (a class folder or digits).
        keep: bool array `(source.num_examples,)`.

    Returns:
        A `Source` with the kept records, labels and image sizes.
    """
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (source.num_examples,):
        raise ValueError(f"`keep` must be a bool array of shape ({source.num_examples},). Received: shape={keep.shape}")
    return dataclasses.replace(
        source,
        records=keep_elements(source.records, keep),
        num_examples=int(keep.sum()),
        labels=source.labels[keep],
        image_sizes=None if source.image_sizes is None else source.image_sizes[keep],
    )


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


def held_out_queries(labels, per_class=None, seed=0, fraction=0.1):
    """A seeded, class-balanced part of labelled training examples to hold out of a kNN bank as its queries.

    For data without a test split: each class gives `per_class` examples (or `fraction` of its size, at least
    one), drawn without replacement, and always keeps at least one in the bank; a class of one example gives none.

    Example:

    >>> int(held_out_queries([0] * 10 + [1] * 20).sum())
    3

    Args:
        labels: int array `(n,)`, -1 for unlabelled examples (never chosen).
        per_class: int or None, queries per class. Defaults to None (`fraction`).
        seed: int. Defaults to 0.
        fraction: float in (0, 1), used when `per_class` is None. Defaults to 0.1.

    Returns:
        bool array `(n,)`, True for the queries.
    """
    labels = np.asarray(labels).reshape(-1)
    check_number("fraction", fraction, 0, 1, low_open=True)
    if per_class is not None:
        check_positive_int("per_class", per_class)
    rng = np.random.default_rng(seed)
    queries = np.zeros(labels.size, dtype=bool)
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        take = per_class if per_class is not None else max(1, int(round(fraction * members.size)))
        take = min(take, members.size - 1)
        if take > 0:
            queries[rng.choice(members, size=take, replace=False)] = True
    return queries


def first_per_class(labels, limit):
    """Boolean mask `(n,)` keeping the first `limit` indices of each label >= 0, in order."""
    keep = np.zeros(len(labels), dtype=bool)
    counts = {}
    for i, label in enumerate(labels):
        if label >= 0 and counts.get(label, 0) < limit:
            counts[label] = counts.get(label, 0) + 1
            keep[i] = True
    return keep
