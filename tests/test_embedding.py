"""Tests for byol_keras.embedding: an encoder's features of arrays and datasets, in inference mode."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.embedding import embed, embed_labelled
from helpers import pooling_encoder, signed_images


def test_embed_uses_inference_mode():
    encoder = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.BatchNormalization()]
    )
    images = np.random.default_rng(0).normal(size=(5, 4, 4, 3)).astype("float32")
    features = embed(encoder, images, batch_size=2)
    # Fresh moving statistics (mean 0, variance 1): inference mode only divides by sqrt(1 + epsilon);
    # training mode would standardise each batch instead.
    np.testing.assert_allclose(features, images.mean(axis=(1, 2)) / math.sqrt(1 + 1e-3), rtol=1e-5)
    assert features.dtype == np.float32 and features.shape == (5, 3)


def test_embed_accepts_arrays_and_datasets_alike():
    encoder = pooling_encoder()
    images, labels = signed_images()
    expected = images.mean(axis=(1, 2))
    np.testing.assert_allclose(embed(encoder, images, batch_size=4), expected, rtol=1e-6)
    unbatched = tf.data.Dataset.from_tensor_slices(images)
    np.testing.assert_allclose(embed(encoder, unbatched, batch_size=4), expected, rtol=1e-6)
    labelled = tf.data.Dataset.from_tensor_slices((images, labels)).batch(5)
    np.testing.assert_allclose(embed(encoder, labelled), expected, rtol=1e-6)


def test_embed_labelled_keeps_pairs_aligned_under_shuffling():
    encoder = pooling_encoder()
    images = np.stack([np.full((4, 4, 3), i, "float32") for i in range(10)])
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(10))).shuffle(10, seed=3)
    features, labels = embed_labelled(encoder, dataset, batch_size=3)
    np.testing.assert_allclose(features[:, 0], labels.astype("float32"))
    assert sorted(labels.tolist()) == list(range(10)) and labels.tolist() != list(range(10))


def test_embed_rejects_unlabelled_pairs():
    with pytest.raises(TypeError, match="`data` must be an `\\(images, labels\\)` tuple"):
        embed_labelled(pooling_encoder(), np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="len\\(images\\)=2, len\\(labels\\)=3"):
        embed_labelled(pooling_encoder(), (np.zeros((2, 4, 4, 3)), [0, 1, 2]))
