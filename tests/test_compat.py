"""byol_keras.compat: every private Keras / TensorFlow internal the library uses still works as relied on."""

import platform

import keras
import tensorflow as tf

from byol_keras import compat
from byol_keras.onednn import onednn_state


def test_the_pinned_versions_are_the_checked_ones():
    # requirements.txt pins these; a new pin means checking every function below again.
    assert {"tensorflow": tf.__version__, "keras": keras.__version__} == compat.CHECKED_WITH


def test_tensorflow_flags():
    assert compat.onednn_enabled() is onednn_state()["enabled"]
    assert compat.x86() is (platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"))
    assert compat.op_determinism_enabled() is False
    tf.constant(0)  # the runtime starts with its first operation, if nothing here started it before
    assert compat.tensorflow_runtime_started() is True


def test_functional_class_is_the_class_of_functional_models():
    inputs = keras.Input((3,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert isinstance(functional, compat.functional_class())
    assert not isinstance(keras.layers.Dense(2), compat.functional_class())


def test_set_initial_epoch_moves_where_fit_starts():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = tf.ones((4, 2))
    compat.set_initial_epoch(model, 2)
    assert len(model.fit(x, x[:, :1], epochs=3, verbose=0).epoch) == 1  # epoch 3 of 3 only
    compat.set_initial_epoch(model, None)
    assert len(model.fit(x, x[:, :1], epochs=3, verbose=0).epoch) == 3
