"""Tests for byol_keras.subsets: keep_elements, the first N of each class, seeded class-balanced subsets."""

import doctest

import numpy as np
import pytest
import tensorflow as tf

from byol_keras import subsets
from byol_keras.sources import load_source
from byol_keras.subsets import balanced_subset, keep_elements, subset_per_class


def test_docstring_examples_run():
    failures, tried = doctest.testmod(subsets, extraglobs={"np": np})
    assert tried >= 3
    assert failures == 0


def test_keep_elements_keeps_order_and_length():
    dataset = tf.data.Dataset.from_tensor_slices((np.arange(6), np.arange(6) * 10))
    kept = keep_elements(dataset, [True, False, False, True, True, False])
    assert int(kept.cardinality()) == 3
    assert [(int(a), int(b)) for a, b in kept] == [(0, 0), (3, 30), (4, 40)]


def test_keep_elements_is_traced_without_an_autograph_notice():
    # AutoGraph could not read the two lambdas it once had on one line, and said so on the console at every
    # call ("AutoGraph could not transform ... To silence this warning ..."), during a run's data loading.
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    tf.get_logger().addHandler(handler)  # where AutoGraph writes its notices
    try:
        dataset = tf.data.Dataset.from_tensor_slices(np.arange(4))
        assert [int(x) for x in keep_elements(dataset, [False, True, True, False])] == [1, 2]
    finally:
        tf.get_logger().removeHandler(handler)
    notices = [record.getMessage() for record in records if "AutoGraph" in record.getMessage()]
    assert notices == [], notices


def test_subset_per_class_keeps_the_first_records_of_each_class_in_order():
    source = load_source("digits", split="train")
    subset = subset_per_class(source, 3)
    assert subset.num_examples == 30 and np.bincount(subset.labels).tolist() == [3] * 10
    expected = [i for i, label in enumerate(source.labels) if list(source.labels[: i + 1]).count(label) <= 3]
    np.testing.assert_array_equal(subset.labels, source.labels[expected])
    all_images = np.stack([image for image, _ in source.records.as_numpy_iterator()])
    kept = np.stack([image for image, _ in subset.records.as_numpy_iterator()])
    np.testing.assert_array_equal(kept, all_images[expected])
    with pytest.raises(ValueError, match="`limit` must be a positive integer"):
        subset_per_class(source, 0)


# --- balanced subsets -------------------------------------------------------------------------------


def test_balanced_subset_is_balanced_and_deterministic():
    labels = np.repeat(np.arange(10), 100)
    np.random.default_rng(0).shuffle(labels)
    indices = balanced_subset(labels, fraction=0.1, seed=7)
    assert len(indices) == 100 and len(np.unique(indices)) == 100
    np.testing.assert_array_equal(np.bincount(labels[indices], minlength=10), [10] * 10)
    np.testing.assert_array_equal(indices, balanced_subset(labels, fraction=0.1, seed=7))
    assert np.all(np.diff(indices) > 0)


def test_balanced_subset_seeds_differ():
    labels = np.repeat(np.arange(10), 100)
    first, second = balanced_subset(labels, 0.1, seed=0), balanced_subset(labels, 0.1, seed=1)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(np.bincount(labels[second]), np.bincount(labels[first]))


def test_balanced_subset_keeps_at_least_one_per_class():
    labels = np.repeat(np.arange(5), [50, 30, 10, 3, 1])
    indices = balanced_subset(labels, fraction=0.01, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[indices]), [1, 1, 1, 1, 1])
    # 10 % of 94 over 5 classes is 2 per class; the class with one example gives what it has.
    indices = balanced_subset(labels, fraction=0.1, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[indices]), [2, 2, 2, 2, 1])


def test_balanced_subset_full_fraction_is_everything_when_balanced():
    labels = np.repeat(np.arange(3), 4)
    np.testing.assert_array_equal(balanced_subset(labels, 1.0, seed=5), np.arange(12))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_balanced_subset_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=f"`fraction` must be a number in \\(0, 1\\]. Received: fraction={fraction}"):
        balanced_subset([0, 1], fraction, seed=0)


def test_balanced_subset_rejects_non_integer_seed():
    with pytest.raises(TypeError, match="`seed` must be an integer. Received: seed=0.5"):
        balanced_subset([0, 1], 0.5, seed=0.5)
