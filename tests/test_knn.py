"""Tests for byol_keras.knn: the weighted kNN votes, predictions and accuracy through an encoder."""

import doctest
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras import knn
from byol_keras.preprocessing import normalize
from byol_keras.knn import knn_accuracy, knn_predict, knn_votes
from helpers import pooling_encoder, signed_images

CIFAR10 = "/work/shared/data/cifar10"


def test_docstring_examples_run():
    failures, tried = doctest.testmod(knn, extraglobs={"np": np, "keras": keras})
    assert tried >= 3
    assert failures == 0


BANK = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype="float32")
BANK_LABELS = np.array([0, 1, 1])


def test_knn_votes_golden_weights_with_k_larger_than_bank():
    votes = np.asarray(knn_votes(BANK, BANK_LABELS, [[1.0, 0.0]], num_classes=3, k=10, temperature=0.5))
    # exp(1 / 0.5) for class 0; exp(0 / 0.5) + exp((1/√2) / 0.5) for class 1; nothing for class 2.
    expected = [math.exp(2.0), 1.0 + math.exp(math.sqrt(2.0)), 0.0]
    np.testing.assert_allclose(votes, [expected], rtol=1e-5)
    np.testing.assert_allclose(votes[0], [7.389056, 5.113250, 0.0], rtol=1e-5)


def test_knn_votes_only_top_k_vote():
    votes = np.asarray(knn_votes(BANK, BANK_LABELS, [[1.0, 0.0]], num_classes=2, k=2, temperature=0.5))
    # The orthogonal bank row (similarity 0) is the third neighbour and drops out.
    np.testing.assert_allclose(votes, [[math.exp(2.0), math.exp(math.sqrt(2.0))]], rtol=1e-5)


def test_knn_votes_are_invariant_to_feature_scale():
    scaled = knn_votes(BANK * [[3.0], [0.5], [7.0]], BANK_LABELS, [[4.0, 0.0]], 2, k=3, temperature=0.5)
    np.testing.assert_allclose(scaled, knn_votes(BANK, BANK_LABELS, [[1.0, 0.0]], 2, k=3, temperature=0.5))


def test_knn_predict_known_answer():
    # Query (0, 1): class 1 gets exp(2) + exp(√2) against class 0's exp(0); query (1, -0.1) is nearest e1.
    predictions = knn_predict(BANK, BANK_LABELS, [[0.0, 1.0], [1.0, -0.1]], num_classes=2, k=10, temperature=0.5)
    np.testing.assert_array_equal(np.asarray(predictions), [1, 0])
    # With k=1 the first query's only neighbour is e2 (class 1); with k=3, votes decide the same way.
    np.testing.assert_array_equal(np.asarray(knn_predict(BANK, BANK_LABELS, [[0.6, 0.5]], 2, k=1)), [1])
    np.testing.assert_array_equal(np.asarray(knn_predict(BANK, [0, 1, 0], [[0.6, 0.5]], 2, k=1)), [0])


def test_knn_weighting_beats_majority():
    # Two far class-0 neighbours against one very close class-1 neighbour: plain majority says 0, the
    # exp(sim / 0.1) weights say 1 (exp(10) > 2·exp(0.5·10)).
    bank = np.array([[1.0, 0.0], [0.5, math.sqrt(0.75)], [0.5, -math.sqrt(0.75)]], "float32")
    predictions = knn_predict(bank, [1, 0, 0], [[1.0, 0.0]], num_classes=2, k=3, temperature=0.1)
    assert int(predictions[0]) == 1
    predictions = knn_predict(bank, [1, 0, 0], [[1.0, 0.0]], num_classes=2, k=3, temperature=100.0)
    assert int(predictions[0]) == 0


def test_knn_predict_batched_equals_argmax_of_votes():
    rng = np.random.default_rng(0)
    bank, labels = rng.normal(size=(40, 6)), rng.integers(0, 4, size=40)
    queries = rng.normal(size=(11, 6))
    expected = np.argmax(np.asarray(knn_votes(bank, labels, queries, 4, k=7, temperature=0.2)), axis=-1)
    for batch_size in (1, 3, 11, 64):
        predictions = knn_predict(bank, labels, queries, 4, k=7, temperature=0.2, batch_size=batch_size)
        np.testing.assert_array_equal(np.asarray(predictions), expected)


def test_knn_predict_small_temperature_stays_finite():
    # exp(1 / 0.005) overflows float32: the raw votes are inf, the stabilised prediction is still right.
    assert np.isinf(np.asarray(knn_votes(BANK, BANK_LABELS, [[1.0, 0.0]], 2, k=3, temperature=0.005))).any()
    predictions = knn_predict(BANK, BANK_LABELS, [[1.0, 0.0], [0.0, 1.0]], 2, k=3, temperature=0.005)
    np.testing.assert_array_equal(np.asarray(predictions), [0, 1])


def test_knn_predict_self_retrieval_is_perfect():
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(30, 16))
    labels = rng.integers(0, 5, size=30)
    predictions = knn_predict(bank, labels, bank, num_classes=5, k=1)
    np.testing.assert_array_equal(np.asarray(predictions), labels)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "`k` must be a positive integer"),
        ({"temperature": 0.0}, "`temperature` must be a positive number"),
        ({"num_classes": 0}, "`num_classes` must be a positive integer"),
        ({"query_features": np.zeros((2, 3))}, "`query_features` must be a 2D array"),
        ({"bank_labels": np.zeros(2)}, "`bank_labels` must have shape \\(3,\\)"),
        ({"batch_size": 0}, "`batch_size` must be a positive integer"),
    ],
)
def test_knn_predict_rejects_bad_arguments(kwargs, message):
    arguments = dict(
        bank_features=BANK, bank_labels=BANK_LABELS, query_features=np.zeros((2, 2)), num_classes=2
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        knn_predict(**arguments)


# --- kNN accuracy through an encoder -----------------------------------------------------------------


def test_knn_accuracy_known_answers():
    encoder = pooling_encoder()
    images, labels = signed_images()
    assert knn_accuracy(encoder, (images, labels), (images, labels), k=3) == 1.0
    # Negated queries point the other way: every prediction is the other class.
    assert knn_accuracy(encoder, (images, labels), (-images, labels), k=3) == 0.0
    # Queries 0, 4 and 5 carry the wrong label: exactly half are right.
    assert knn_accuracy(encoder, (images, labels), (images, [1, 0, 0, 1, 0, 0]), k=200) == pytest.approx(0.5)


def test_knn_accuracy_same_for_arrays_and_datasets():
    rng = np.random.default_rng(2)
    encoder = pooling_encoder()
    bank = (rng.normal(size=(24, 4, 4, 3)).astype("float32"), rng.integers(0, 3, 24))
    queries = (rng.normal(size=(12, 4, 4, 3)).astype("float32"), rng.integers(0, 3, 12))
    from_arrays = knn_accuracy(encoder, bank, queries, k=5, batch_size=5)
    from_datasets = knn_accuracy(
        encoder,
        tf.data.Dataset.from_tensor_slices(bank),
        tf.data.Dataset.from_tensor_slices(queries).batch(7),
        k=5,
        batch_size=5,
    )
    assert from_arrays == from_datasets
    assert 0.0 <= from_arrays <= 1.0


@pytest.mark.slow
def test_knn_accuracy_on_real_cifar10_pixels():
    if not os.path.isdir(os.path.join(CIFAR10, "train")):
        pytest.skip(f"CIFAR-10 JPEG folders not found at {CIFAR10}")
    from PIL import Image

    def load(split, per_class):
        images, labels = [], []
        classes = sorted(os.listdir(os.path.join(CIFAR10, split)))
        for label, name in enumerate(classes):
            folder = os.path.join(CIFAR10, split, name)
            for file in sorted(os.listdir(folder))[:per_class]:
                images.append(np.asarray(Image.open(os.path.join(folder, file)).convert("RGB")))
                labels.append(label)
        return normalize(np.stack(images)).numpy(), np.array(labels)

    # Raw downsampled pixels as features: a known, modest kNN baseline (well above the 10 % of chance).
    encoder = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.AveragePooling2D(4), keras.layers.Flatten()])
    accuracy = knn_accuracy(encoder, load("train", 100), load("test", 20), k=20)
    assert 0.15 < accuracy < 0.6
