"""encoders.convnet: the shapes, the layers it is made of, and a BYOL step on it."""

import doctest

import keras
import numpy as np
import pytest

from byol_keras import encoders
from byol_keras.encoders import convnet


def test_convnet_halves_the_resolution_after_the_first_layer_and_pools():
    model = convnet((4, 8, 16), input_shape=(16, 16, 3))
    assert model.output_shape == (None, 16)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [4, 8, 16]
    assert [c.strides for c in convs] == [(1, 1), (2, 2), (2, 2)]
    assert all(c.kernel_size == (3, 3) and not c.use_bias for c in convs)
    # 16 → 16 → 8 → 4 before the pooling; every conv is followed by a BatchNorm and a ReLU.
    assert model.get_layer("conv3_relu").output.shape[1:3] == (4, 4)
    names = [layer.name for layer in model.layers]
    for index in (1, 2, 3):
        assert names.index(f"conv{index}_conv") < names.index(f"conv{index}_bn") < names.index(f"conv{index}_relu")
    # The output is the mean of the last ReLU map over space.
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    last = keras.Model(model.input, model.get_layer("conv3_relu").output)(x)
    np.testing.assert_allclose(model(x), np.asarray(last).mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_convnet_takes_an_initializer_and_rejects_bad_widths():
    model = convnet((4,), input_shape=(8, 8, 3), kernel_initializer="zeros")
    assert not np.any(model.get_layer("conv1_conv").kernel.numpy())
    for bad in ((), (4, 0), (4, 2.5), (True,)):
        with pytest.raises(ValueError, match="`widths` must be"):
            convnet(bad)


def test_byol_trains_a_step_on_a_convnet():
    from byol_keras.byol import BYOL

    model = BYOL(convnet((4, 8), input_shape=(8, 8, 3)), projection_dim=8, projection_hidden_dim=16,
                 prediction_hidden_dim=16, total_steps=2)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    views = np.random.default_rng(0).normal(size=(2, 4, 8, 8, 3)).astype("float32")
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors((views[0], views[1]))
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_doctest():
    assert doctest.testmod(encoders).failed == 0
