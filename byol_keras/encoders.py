"""Encoders: ResNet-18 with the CIFAR stem, ResNet-50, a small ConvNet, and the check that any model can be one.

An encoder is any `keras.Model` (or layer) mapping a batch of images `(batch, h, w, channels)` to a batch
of feature vectors `(batch, dim)`: ours below, `keras.applications` models built with
`include_top=False, pooling="avg"`, KerasHub backbones followed by pooling, or a user's own model.
"""

import keras

from byol_keras import layers
from byol_keras.layers import FusedBatchNormalization
from byol_keras.validation import check_bool, check_positive_int, check_positive_ints

# PyTorch/torchvision BatchNorm defaults, which the CIFAR BYOL results (solo-learn, lightly) use.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _conv_bn(x, filters, kernel_size, strides, name, relu=True, kernel_initializer="he_normal", fused=True,
             downsample_padding="same"):
    padding = "same"
    if strides > 1 and kernel_size > 1 and downsample_padding == "symmetric":
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    # A strided 1×1 convolution (the projection shortcut) subsamples first: the same result, and it keeps
    # oneDNN away from a kernel that corrupts the heap for few input channels (`layers.Conv2D`).
    conv = layers.Conv2D if kernel_size == 1 and strides > 1 else keras.layers.Conv2D
    x = conv(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=keras.initializers.get(kernel_initializer),
        name=f"{name}_conv",
    )(x)
    batch_norm = FusedBatchNormalization if fused else keras.layers.BatchNormalization
    x = batch_norm(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def _basic_block(x, filters, strides, name, kernel_initializer, fused, downsample_padding):
    shortcut = x
    y = _conv_bn(x, filters, 3, strides, f"{name}_1", kernel_initializer=kernel_initializer, fused=fused,
                 downsample_padding=downsample_padding)
    y = _conv_bn(y, filters, 3, 1, f"{name}_2", relu=False, kernel_initializer=kernel_initializer, fused=fused)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(
            x, filters, 1, strides, f"{name}_proj", relu=False, kernel_initializer=kernel_initializer, fused=fused
        )
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet18(
    width=64,
    cifar_stem=True,
    input_shape=(None, None, 3),
    name="resnet18",
    kernel_initializer="he_normal",
    fused_batch_norm=True,
    stem_relu=True,
    downsample_padding="same",
):
    """ResNet-18 (He et al., 2016) returning globally average-pooled features `(batch, 8 * width)`.

    With `cifar_stem=True` the stem is one 3×3 convolution with stride 1 and no max-pool, the variant
    solo-learn's and lightly's published CIFAR-10 BYOL results use;
    otherwise the ImageNet stem (7×7 stride 2, then 3×3 max-pool stride 2).

    Args:
        width: int, channels of the first stage; the stages have width, 2·width, 4·width, 8·width.
            64 is the standard network; a small width (e.g. 4) makes a tiny model for tests.
            Defaults to 64.
        cifar_stem: bool. Defaults to True.
        input_shape: tuple `(height, width, channels)`; `None` sides accept any size.
            Defaults to `(None, None, 3)`.
        name: str. Defaults to "resnet18".
        kernel_initializer: the convolutions' initializer, any `keras.initializers.get` identifier.
            Defaults to "he_normal". Every convolution is followed by BatchNorm, so the initial
            scale does not change the function but sets the effective learning rate (∝ lr / ‖w‖²):
            PyTorch's default (`{"class_name": "VarianceScaling", "config": {"scale": 1/3,
            "mode": "fan_in", "distribution": "uniform"}}`) is √6 times smaller than "he_normal".
        fused_batch_norm: bool, `byol_keras.layers.FusedBatchNormalization` (TensorFlow's fused kernel,
            same results, less memory) instead of `keras.layers.BatchNormalization`. Defaults to True.
        stem_relu: bool, the ReLU after the stem's BatchNorm. `False` reproduces the backbone of
            lightly's CIFAR-10 benchmarks, `nn.Sequential(*ResNetGenerator(...).children()[:-1])`,
            which loses that ReLU because `ResNet.forward` applies it functionally (it is not a
            child module). Defaults to True (He et al.).
        downsample_padding: `"same"` or `"symmetric"`, the padding of the strided 3×3 (and 7×7)
            convolutions. TensorFlow's "same" pads an even input on the bottom and right only, so the
            window of output pixel i is centred on input pixel 2i + 1 while the 1×1 strided shortcut
            samples 2i; `"symmetric"` pads one pixel on every side (PyTorch's `padding=1`), centring
            both on 2i, as torchvision and lightly do. Defaults to `"same"` (Keras, and the official
            code's Haiku convolutions).

    Returns:
        A `keras.Model` mapping `(batch, h, w, channels)` images to `(batch, 8 * width)` features.

    Example:

    >>> encoder = resnet18(width=4, input_shape=(32, 32, 3))
    >>> encoder.output_shape
    (None, 32)
    """
    width = check_positive_int("width", width)
    inputs = keras.Input(shape=input_shape, name="images")
    check_bool("stem_relu", stem_relu)
    if downsample_padding not in ("same", "symmetric"):
        raise ValueError(
            "`downsample_padding` must be 'same' or 'symmetric'. "
            f"Received: downsample_padding={downsample_padding!r}"
        )
    stem = dict(relu=stem_relu, kernel_initializer=kernel_initializer, fused=fused_batch_norm,
                downsample_padding=downsample_padding)
    if cifar_stem:
        x = _conv_bn(inputs, width, 3, 1, "stem", **stem)
    else:
        x = _conv_bn(inputs, width, 7, 2, "stem", **stem)
        if downsample_padding == "symmetric":
            # After the ReLU every value is >= 0, so zero padding equals PyTorch's -inf padding.
            if not stem_relu:
                raise ValueError(
                    "`downsample_padding='symmetric'` with the ImageNet stem needs `stem_relu=True`. "
                    f"Received: stem_relu={stem_relu}, cifar_stem={cifar_stem}"
                )
            x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
            x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)
        else:
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, multiplier in enumerate((1, 2, 4, 8)):
        for block in range(2):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(
                x, width * multiplier, strides, f"stage{stage + 1}_block{block + 1}", kernel_initializer,
                fused_batch_norm, downsample_padding,
            )
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name=name)


def convnet(widths=(32, 64, 128), input_shape=(None, None, 3), name="convnet", kernel_initializer="he_normal"):
    """A plain stack of 3×3 convolutions for tiny images: conv → BatchNorm → ReLU per entry of `widths`.

    The first convolution keeps the resolution, every later one halves it (stride 2); global average
    pooling gives `(batch, widths[-1])`. The demo's encoder: on 8×8 digits it learns as well as a narrow
    ResNet-18 at a fraction of the cost per step (`docs/results.md`, "The demo").

    Example:

    >>> convnet((8, 16), input_shape=(16, 16, 3)).output_shape
    (None, 16)

    Args:
        widths: tuple of int > 0, the channels of each convolution. Defaults to `(32, 64, 128)`.
        input_shape: `(height, width, channels)`. Defaults to `(None, None, 3)`.
        name: str. Defaults to "convnet".
        kernel_initializer: Keras initializer (identifier or config) of the convolutions. Defaults to
            "he_normal".

    Returns:
        A functional `keras.Model`.
    """
    widths = check_positive_ints("widths", widths)
    inputs = keras.Input(input_shape)
    x = inputs
    for index, filters in enumerate(widths):
        x = _conv_bn(x, filters, 3, 1 if index == 0 else 2, f"conv{index + 1}", kernel_initializer=kernel_initializer)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet50(input_shape=(None, None, 3), name="resnet50"):
    """ResNet-50 from `keras.applications`, randomly initialised, with average pooling: `(batch, 2048)`.

    Args:
        input_shape: tuple `(height, width, 3)`. Defaults to `(None, None, 3)`.
        name: str. Defaults to "resnet50".

    Returns:
        A `keras.Model` mapping images to `(batch, 2048)` features.
    """
    model = keras.applications.ResNet50(
        include_top=False, weights=None, pooling="avg", input_shape=input_shape
    )
    # The one output, not the list of it: a list makes a one-output model return a list, which BYOL refuses.
    return keras.Model(model.inputs, model.outputs[0], name=name)


def feature_shape(encoder, input_shape):
    """The output shape the encoder gives for a batch of `input_shape` images, checked to be rank 2.

    Args:
        encoder: a `keras.layers.Layer` (a `keras.Model` is one).
        input_shape: tuple `(batch, height, width, channels)`; `batch` may be None.

    Returns:
        The output shape, a tuple `(batch, dim)` with a known `dim`.

    Raises:
        ValueError: when `encoder` is not a Keras layer or model, or does not produce rank-2 features.
    """
    if not isinstance(encoder, keras.layers.Layer):
        raise ValueError(
            "`encoder` must be a keras.Model or keras.layers.Layer mapping images to feature vectors "
            f"(batch, dim). Received: encoder={encoder!r} of type {type(encoder).__name__}"
        )
    output = encoder.compute_output_spec(keras.KerasTensor(tuple(input_shape), dtype="float32"))
    if isinstance(output, (list, tuple, dict)):
        raise ValueError(
            "`encoder` must return a single tensor of features (batch, dim). "
            f"Received: encoder={encoder.name!r} returning {type(output).__name__} of {len(output)} outputs"
        )
    shape = tuple(output.shape)
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            "`encoder` must map images to rank-2 features (batch, dim), e.g. a keras.applications model "
            "with include_top=False, pooling='avg'. "
            f"Received: encoder={encoder.name!r} with output shape {shape} for input shape {tuple(input_shape)}"
        )
    return shape
