"""The encoders' own layers: `FusedBatchNormalization`, `Conv2D`, and `sync_batchnorm`.

`FusedBatchNormalization`: Keras' BatchNormalization, computed by TensorFlow's fused kernel.

Keras 3 computes BatchNormalization on TensorFlow from separate ops (`moments`, then
`tf.nn.batch_normalization`); the gradient tape keeps their intermediate tensors, each as large as
the activation. TensorFlow's `FusedBatchNormV3` (oneDNN on CPU, cuDNN on GPU) computes the batch
statistics and the output in one kernel and keeps only its input and two per-channel vectors for the
backward pass. Same maths, same variables, same moving-statistics update as Keras' layer: the
encoder's training step uses less memory and, without XLA, less time (docs/results.md).

`Conv2D`: Keras' Conv2D, but a strided 1×1 convolution (ResNet's projection shortcut) is computed as a
subsampling followed by a stride-1 1×1 convolution, which keeps TensorFlow's oneDNN kernels away from a
heap-corrupting bug (see the class).
"""

import keras
import tensorflow as tf
from keras import ops

from byol_keras import compat


@keras.saving.register_keras_serializable(package="byol_keras")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` for 4-D channels-last inputs, through TensorFlow's fused kernel.

    Drop-in: the same arguments, weights, `get_config` and results as the Keras layer (to float
    rounding: the fused kernel raises `epsilon` to at least 1.001e-5). It falls back to Keras' own
    computation whenever the fused kernel does not apply: another backend, inputs that are not 4-D
    with channels last, a mask, `synchronized=True` (cross-replica statistics) or `renorm=True`.

    In training (`training=True` and `trainable`), the output is normalised with the batch mean and
    the biased batch variance, and the moving statistics move as in Keras:
    `moving = momentum·moving + (1 − momentum)·batch` (the fused kernel returns the unbiased
    variance, which is converted back first). In inference the moving statistics are used.

    Example:

    >>> layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    >>> tuple(layer(np.zeros((2, 4, 4, 3), "float32"), training=True).shape)
    (2, 4, 4, 3)
    """

    def _fused_applies(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.synchronized
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        # As Keras: statistics in float32 whatever the compute dtype (mixed precision).
        x = ops.cast(inputs, "float32")
        channels = x.shape[-1]
        gamma = ops.cast(self.gamma, "float32") if self.scale else tf.ones((channels,), "float32")
        beta = ops.cast(self.beta, "float32") if self.center else tf.zeros((channels,), "float32")
        if training and self.trainable:
            y, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )
            count = ops.cast(ops.prod(ops.shape(x)[:-1]), "float32")
            variance = unbiased_variance * (count - 1.0) / ops.maximum(count, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=ops.cast(self.moving_mean, "float32"),
                variance=ops.cast(self.moving_variance, "float32"), epsilon=self.epsilon,
                data_format="NHWC", is_training=False,
            )
        return ops.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="byol_keras")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D`, except that a strided 1×1 convolution subsamples first: `x[:, ::s, ::s, :]`, then
    a stride-1 1×1 convolution.

    Why: oneDNN's 1×1 backward-weights kernel (`jit_1x1`, TensorFlow's `Conv2DBackpropFilter` with oneDNN
    on) writes past its workspace for a strided 1×1 NHWC convolution with fewer input channels than its
    channel block (8 with AVX2, 16 with AVX-512): the heap is corrupted and the process aborts or
    segfaults, e.g. a `fit` of `resnet18(width=4)` with one thread under AVX2, or at 64 px with two
    threads on AVX-512 (uxlfoundation/oneDNN#6035; `tests/test_onednn.py` runs both). The kernel is only
    used for strides > 1, so a stride-1 convolution of the subsampled input never reaches it.

    Same function, same weights: a 1×1 window with stride s reads input pixel s·i for output pixel i under
    "valid" and under TensorFlow's "same" (which pads nothing for a 1×1 kernel), and there are ceil(h / s)
    of them, exactly the pixels `x[:, ::s]` keeps. Every other convolution is Keras' own computation. The
    configuration, variables and their names are Keras' Conv2D's, and so is the class name, which Keras
    uses to key a layer's weights in `.weights.h5` files: weights and step backups saved with either class
    load into the other.

    Args:
        as `keras.layers.Conv2D`.

    Example:

    >>> x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32")
    >>> layer, reference = Conv2D(4, 1, strides=2), keras.layers.Conv2D(4, 1, strides=2)
    >>> _ = reference(x); _ = layer(x); layer.set_weights(reference.get_weights())
    >>> bool(np.allclose(layer(x), reference(x), atol=1e-6)), tuple(layer(x).shape)
    (True, (2, 3, 3, 4))
    """

    def convolution_op(self, inputs, kernel):
        if self.kernel_size != (1, 1) or self.strides == (1, 1) or self.dilation_rate != (1, 1):
            return super().convolution_op(inputs, kernel)
        rows, cols = self.strides
        if self.data_format == "channels_last":
            inputs = inputs[:, ::rows, ::cols, :]
        else:
            inputs = inputs[:, :, ::rows, ::cols]
        return ops.conv(inputs, kernel, strides=1, padding=self.padding, data_format=self.data_format)


@keras.saving.register_keras_serializable(package="byol_keras")
class TokenPooling(keras.layers.Layer):
    """The token at `index` of a sequence: `(batch, tokens, dim)` -> `(batch, dim)` (a ViT's class token).

    Args:
        index: int, the token kept. Defaults to 0 (where KerasHub's ViT puts its class token).
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    >>> TokenPooling()(np.arange(12.0).reshape(1, 3, 4)).numpy().tolist()
    [[0.0, 1.0, 2.0, 3.0]]
    """

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"`index` must be an int. Received: index={index!r}")
        self.index = index

    def call(self, tokens):
        return tokens[:, self.index]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


def sync_batchnorm(encoder):
    """Return `encoder` with every `BatchNormalization` layer synchronised across replicas, weights kept.

    Paper, appendix B: "we use ... batch normalization ... the batch statistics are computed across all
    devices" (the official code uses cross-replica BN). Keras' `BatchNormalization(synchronized=True)`
    computes the mean and variance over the global batch under a `tf.distribute` strategy and is an
    ordinary BatchNorm on one replica, so the converted encoder is interchangeable with the original.

    Functional and Sequential models (ours, `keras.applications`, a user's), including nested ones, are
    cloned: the original is left untouched. An encoder without BatchNormalization (a ViT) is returned as it is. A subclassed model cannot be cloned generically, so its
    BatchNormalization layers are switched in place and the same object is returned (call this before
    `compile`/`fit` traces it).

    Args:
        encoder: a `keras.Model`.

    Returns:
        A `keras.Model` with the same weights whose BatchNormalization layers have `synchronized=True`.

    Example:

    >>> from byol_keras.encoders import resnet18
    >>> synced = sync_batchnorm(resnet18(width=2, input_shape=(8, 8, 3)))
    >>> all(l.synchronized for l in synced._flatten_layers() if isinstance(l, keras.layers.BatchNormalization))
    True
    """
    if not isinstance(encoder, keras.Model):
        raise TypeError(
            f"`encoder` must be a keras.Model. Received: encoder={encoder!r} of type {type(encoder).__name__}"
        )
    batch_norms = [layer for layer in encoder._flatten_layers(include_self=False)
                   if isinstance(layer, keras.layers.BatchNormalization)]
    if not batch_norms:
        # Nothing to synchronise (a ViT: LayerNorm only). Not cloned either: a layer whose config does not
        # rebuild it (KerasHub's ViT patch embedding) would fail for nothing.
        return encoder
    if not _is_graph_model(encoder):
        for layer in batch_norms:
            layer.synchronized = True
        return encoder

    def clone_layer(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            config = layer.get_config()
            config["synchronized"] = True
            return layer.__class__.from_config(config)
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(encoder, clone_function=clone_layer, recursive=True)
    weights = encoder.get_weights()
    if len(weights) != len(clone.weights):
        raise ValueError(
            f"Cloning {encoder.name!r} to synchronise its BatchNorm gave {len(clone.weights)} weights "
            f"instead of {len(weights)}; one of its layers does not rebuild from its get_config()."
        )
    clone.set_weights(weights)
    return clone


def _is_graph_model(model):
    """True for Functional and Sequential models (a graph of layers that `clone_model` can rebuild)."""
    return isinstance(model, (keras.Sequential, compat.functional_class()))
