"""byol_loss: golden numbers and the properties the paper states."""

import numpy as np
import pytest
import tensorflow as tf

from byol_keras.losses import byol_loss, l2_normalize


def _np(x):
    return np.asarray(x)


def test_golden_numbers():
    p = np.array([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0], [1.0, 2.0]], dtype="float32")
    z = np.array([[1.0, 1.0], [0.0, 5.0], [-3.0, -4.0], [2.0, 4.0]], dtype="float32")
    expected = [2.0 - np.sqrt(2.0), 2.0, 4.0, 0.0]
    np.testing.assert_allclose(_np(byol_loss(p, z)), expected, atol=1e-6)


def test_equals_squared_distance_of_normalised_vectors():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(16, 7)).astype("float32")
    z = rng.normal(size=(16, 7)).astype("float32") * 10
    pn = p / np.linalg.norm(p, axis=1, keepdims=True)
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    np.testing.assert_allclose(_np(byol_loss(p, z)), np.sum((pn - zn) ** 2, axis=1), atol=1e-5)


def test_symmetric_and_scale_invariant():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(8, 5)).astype("float32")
    z = rng.normal(size=(8, 5)).astype("float32")
    np.testing.assert_allclose(_np(byol_loss(p, z)), _np(byol_loss(z, p)), atol=1e-6)
    np.testing.assert_allclose(_np(byol_loss(3.0 * p, 0.5 * z)), _np(byol_loss(p, z)), atol=1e-5)


def test_identical_and_opposite_directions():
    v = np.array([[0.3, -1.2, 2.0]], dtype="float32")
    assert _np(byol_loss(v, 2 * v))[0] == pytest.approx(0.0, abs=1e-6)
    assert _np(byol_loss(v, -v))[0] == pytest.approx(4.0, abs=1e-6)


def test_zero_vector_is_safe_with_finite_gradient():
    p = tf.Variable([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    z = tf.constant([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    with tf.GradientTape() as tape:
        loss = byol_loss(p, z)
        total = tf.reduce_sum(loss)
    np.testing.assert_allclose(loss.numpy(), [2.0, 2.0], atol=1e-6)
    grad = tape.gradient(total, p)
    assert np.all(np.isfinite(grad.numpy()))


def test_float16_inputs_give_float32_loss():
    p = np.array([[1.0, 0.0]], dtype="float16")
    z = np.array([[1.0, 1.0]], dtype="float16")
    out = byol_loss(p, z)
    assert str(out.dtype) == "<dtype: 'float32'>" or "float32" in str(out.dtype)
    assert float(out[0]) == pytest.approx(2.0 - np.sqrt(2.0), abs=1e-3)


def test_l2_normalize_golden():
    # Each row over its norm; a zero row stays zero; a row of norm 5e-8 is above the 1e-12 bound on the norm.
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-2.0, 0.0], [3e-8, 4e-8]], "float32")
    np.testing.assert_allclose(_np(l2_normalize(x)), [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0], [0.6, 0.8]],
                               rtol=1e-6, atol=1e-7)


def test_l2_normalize_unit_norm():
    x = np.random.default_rng(2).normal(size=(4, 9)).astype("float32")
    np.testing.assert_allclose(np.linalg.norm(_np(l2_normalize(x)), axis=1), 1.0, atol=1e-6)
