"""FusedBatchNormalization gives Keras' BatchNormalization's results, gradients and moving statistics."""

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras import layers
from byol_keras.encoders import resnet18
from byol_keras.layers import sync_batchnorm
from byol_keras.layers import FusedBatchNormalization


def _pair(shape, center=True, scale=True, **kwargs):
    rng = np.random.default_rng(0)
    keras_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=center, scale=scale, **kwargs)
    fused_bn = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, center=center, scale=scale, **kwargs)
    for layer in (keras_bn, fused_bn):
        layer.build(shape)
    for name in ("gamma", "beta"):
        if getattr(keras_bn, name, None) is not None:
            value = rng.normal(size=shape[-1]).astype("float32")
            getattr(keras_bn, name).assign(value)
            getattr(fused_bn, name).assign(value)
    return keras_bn, fused_bn


def _run(layer, x, upstream):
    """Two training steps' outputs and gradients, then the moving statistics and an inference output."""
    results = []
    for _ in range(2):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x] + layer.trainable_weights)
        results.append((y.numpy(), [g.numpy() for g in grads]))
    return results, layer.moving_mean.numpy(), layer.moving_variance.numpy(), layer(x, training=False).numpy()


@pytest.mark.parametrize("center, scale", [(True, True), (False, False)])
def test_fused_equals_keras_in_training_and_inference(center, scale):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(2.0, 3.0, size=(6, 5, 4, 7)).astype("float32"))
    upstream = tf.constant(rng.normal(size=x.shape).astype("float32"))
    keras_bn, fused_bn = _pair(x.shape, center, scale)
    expected, fused = _run(keras_bn, x, upstream), _run(fused_bn, x, upstream)
    for (y_k, g_k), (y_f, g_f) in zip(expected[0], fused[0]):
        np.testing.assert_allclose(y_f, y_k, atol=2e-5)
        for a, b in zip(g_f, g_k):
            np.testing.assert_allclose(a, b, atol=1e-4)
    # Moving statistics: biased batch variance, Keras' momentum rule (two updates from 0 / 1).
    np.testing.assert_allclose(fused[1], expected[1], atol=1e-6)
    np.testing.assert_allclose(fused[2], expected[2], rtol=1e-5)
    batch_var = np.var(x.numpy(), axis=(0, 1, 2))
    np.testing.assert_allclose(fused[2], 0.81 * 1.0 + 0.19 * batch_var, rtol=1e-5)
    np.testing.assert_allclose(fused[3], expected[3], atol=2e-5)


def test_fused_runs_under_xla_and_in_mixed_precision():
    x = tf.constant(np.random.default_rng(2).normal(size=(4, 3, 3, 5)).astype("float32"))
    keras_bn, fused_bn = _pair(x.shape)
    step = tf.function(lambda layer: layer(x, training=True), jit_compile=True)
    np.testing.assert_allclose(step(fused_bn).numpy(), step(keras_bn).numpy(), atol=2e-5)
    half = FusedBatchNormalization(dtype="mixed_bfloat16")
    y = half(tf.cast(x, "bfloat16"), training=True)
    assert y.dtype == tf.bfloat16 and half.moving_mean.dtype == "float32"


def test_falls_back_to_keras_where_the_fused_kernel_does_not_apply():
    x = tf.constant(np.random.default_rng(3).normal(size=(8, 6)).astype("float32"))
    keras_bn, fused_bn = _pair(x.shape)
    np.testing.assert_allclose(fused_bn(x, training=True).numpy(), keras_bn(x, training=True).numpy(), atol=1e-6)
    images = tf.zeros((2, 4, 4, 3))
    assert not FusedBatchNormalization(axis=1)._fused_applies(images, None)
    assert not FusedBatchNormalization(synchronized=True)._fused_applies(images, None)
    assert FusedBatchNormalization()._fused_applies(images, None)


def test_resnet18_uses_it_and_round_trips():
    encoder = resnet18(width=2, input_shape=(8, 8, 3))
    norms = [l for l in encoder.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(norms) == 20 and all(isinstance(l, FusedBatchNormalization) for l in norms)
    plain = resnet18(width=2, input_shape=(8, 8, 3), fused_batch_norm=False)
    assert not any(isinstance(l, FusedBatchNormalization) for l in plain.layers)
    clone = keras.models.clone_model(encoder)
    assert all(isinstance(l, FusedBatchNormalization) for l in clone.layers if isinstance(l, keras.layers.BatchNormalization))
    plain.set_weights(encoder.get_weights())
    x = np.random.default_rng(4).uniform(size=(3, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(encoder(x, training=True), plain(x, training=True), atol=1e-4)


def test_doctest():
    assert doctest.testmod(layers, extraglobs={"np": np}).failed == 0


# ------------------------------------------------------------------------------------------------------
# synchronised BatchNorm
# ------------------------------------------------------------------------------------------------------


def batchnorms(model):
    return [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]


def test_sync_batchnorm_resnet18_keeps_weights_and_outputs():
    encoder = resnet18(width=2, input_shape=(8, 8, 3))
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    # Non-trivial moving statistics, so that inference mode checks they were copied.
    encoder(x, training=True)
    synced = sync_batchnorm(encoder)
    assert synced is not encoder
    assert len(batchnorms(synced)) == len(batchnorms(encoder)) == 20
    assert all(l.synchronized for l in batchnorms(synced))
    assert not any(l.synchronized for l in batchnorms(encoder)), "the original must stay untouched"
    for a, b in zip(encoder.weights, synced.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    # On one replica a synchronised BN is an ordinary BN: same outputs in both modes (to float rounding:
    # resnet18's FusedBatchNormalization uses TensorFlow's fused kernel, the synchronised one Keras' ops).
    np.testing.assert_allclose(np.array(synced(x, training=False)), np.array(encoder(x, training=False)), atol=1e-5)
    # In training mode the synchronised BN computes the variance as E[x²] − E[x]² (one pass, so that it can
    # all-reduce both sums) instead of two passes: float32 rounding differs by ~3e-5 after 20 BN layers.
    np.testing.assert_allclose(np.array(synced(x, training=True)), np.array(encoder(x, training=True)),
                               rtol=1e-4, atol=1e-4)
    # The BYOL target is rebuilt from the config: it must carry the flag too.
    norms = [l for l in synced.get_config()["layers"] if l["class_name"].endswith("BatchNormalization")]
    assert len(norms) == 20 and all(l["config"].get("synchronized") for l in norms)


def test_sync_batchnorm_keras_applications_nested_and_subclassed():
    app = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg",
        include_preprocessing=False, minimalistic=True,
    )
    inputs = keras.Input((32, 32, 3))
    head = keras.Sequential([keras.Input((app.output_shape[-1],)), keras.layers.BatchNormalization()], name="head")
    wrapped = keras.Model(inputs, head(app(inputs)), name="wrapped")  # nested functional + Sequential
    synced = sync_batchnorm(wrapped)
    assert len(batchnorms(synced)) == len(batchnorms(wrapped)) > 10
    assert all(l.synchronized for l in batchnorms(synced))
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.array(synced(x)), np.array(wrapped(x)), atol=1e-5)

    class Tiny(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(3, 3)
            self.bn = keras.layers.BatchNormalization()
            self.pool = keras.layers.GlobalAveragePooling2D()

        def call(self, x, training=False):
            return self.pool(self.bn(self.conv(x), training=training))

    tiny = Tiny()
    tiny(x)
    assert sync_batchnorm(tiny) is tiny and tiny.bn.synchronized  # switched in place

    with pytest.raises(TypeError, match="encoder=.*Dense"):
        sync_batchnorm(keras.layers.Dense(3))
