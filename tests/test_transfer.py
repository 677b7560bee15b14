"""Tests for byol_keras.transfer: the linear probe on features, and a classifier on a frozen encoder.

The paper's two protocols end to end (`transfer` through `byol-linear-eval` and `byol-finetune`) are in
test_evaluation.py.
"""

import doctest

import keras
import numpy as np
import pytest

from byol_keras import transfer
from byol_keras.eval_data import classification_dataset
from byol_keras.transfer import classifier_on_encoder, linear_probe, train_classifier
from helpers import colour_images, small_encoder


def test_docstring_examples_run():
    failures, tried = doctest.testmod(transfer, extraglobs={"np": np, "keras": keras})
    assert tried >= 3
    assert failures == 0


# --- linear probe -----------------------------------------------------------------------------------


def _blobs(rng, per_class, num_classes=3, dim=8):
    centres = rng.normal(size=(num_classes, dim)) * 5.0
    labels = np.repeat(np.arange(num_classes), per_class)
    features = centres[labels] + rng.normal(size=(len(labels), dim)) * 0.3
    return features.astype("float32"), labels


def test_linear_probe_separates_separable_features():
    rng = np.random.default_rng(0)
    train_x, train_y = _blobs(rng, 20)
    test_x, test_y = train_x[::2] + rng.normal(size=train_x[::2].shape).astype("float32") * 0.1, train_y[::2]
    results = linear_probe(train_x, train_y, test_x, test_y, num_classes=3, epochs=8, batch_size=16)
    assert results == {"top1": 1.0, "top5": 1.0}


def test_linear_probe_cannot_predict_shuffled_labels():
    # The property that makes the test above meaningful: accuracy falls to chance when the test labels
    # carry no information about the features.
    rng = np.random.default_rng(0)
    train_x, train_y = _blobs(rng, 20)
    test_y = rng.permutation(train_y)
    results = linear_probe(train_x, train_y, train_x, test_y, num_classes=3, epochs=8, batch_size=16)
    assert results["top1"] < 0.6


def test_linear_probe_validates_shapes():
    with pytest.raises(ValueError, match="same length"):
        linear_probe(np.zeros((4, 2)), [0, 1, 0], np.zeros((2, 2)), [0, 1], num_classes=2, epochs=1)
    with pytest.raises(ValueError, match="`epochs` must be a positive integer. Received: epochs=0"):
        linear_probe(np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((2, 2)), [0, 1], num_classes=2, epochs=0)


# --- a classifier on an encoder -------------------------------------------------------------------


def test_linear_classifier_freezes_encoder_and_batchnorm():
    encoder = small_encoder()
    before = [w.numpy().copy() for w in encoder.weights]  # includes BN moving statistics
    classifier = classifier_on_encoder(encoder, num_classes=2, freeze=True, image_size=12)
    assert [w.path for w in classifier.trainable_weights] == ["classifier/kernel", "classifier/bias"]
    rng = np.random.default_rng(0)
    dataset = classification_dataset(colour_images(rng, 4), 12, 4, training=True)
    train_classifier(classifier, dataset, epochs=1, learning_rate=0.1, verbose=0)
    for old, new in zip(before, encoder.weights):
        np.testing.assert_array_equal(old, new.numpy())
