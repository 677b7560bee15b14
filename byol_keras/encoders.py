"""Encoders: ResNet-18 with the CIFAR stem, ResNet-50, a small ConvNet, KerasHub backbones, and the check that any
model can be one.

An encoder is any `keras.Model` (or layer) mapping a batch of images `(batch, h, w, channels)` to a batch
of feature vectors `(batch, dim)`: ours below, `keras.applications` models built with
`include_top=False, pooling="avg"`, KerasHub backbones followed by pooling (`keras_hub_encoder`), or a user's
own model. `build_encoder` makes one from the plain spec a preset or the command line holds.
"""

import importlib
import os

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


# The spec of a KerasHub encoder on the command line: `--encoder keras_hub:<preset or local preset directory>`.
KERAS_HUB_PREFIX = "keras_hub:"
POOLINGS = ("auto", "avg", "token", "mean")


def _keras_hub():
    try:
        return importlib.import_module("keras_hub")
    except ImportError as error:
        raise ImportError(
            "A KerasHub encoder needs the keras-hub package: `pip install \"byol-keras[keras-hub]\"`."
        ) from error


def keras_hub_encoder(backbone, pooling="auto", input_shape=None, load_weights=True, name=None):
    """A KerasHub backbone followed by pooling: an encoder mapping images to `(batch, dim)` features.

    The backbone is a `keras_hub.models.Backbone` built from its config (`keras_hub.models.ResNetBackbone(...)`,
    random weights), or the name of a preset or the path of a local preset directory
    (`backbone.save_to_preset(path)`), loaded with its weights: a warm start for BYOL on the user's own
    domain. BYOL builds its target network from the encoder's config, so the backbone's `get_config()` must
    rebuild it; this is checked here, and a KerasHub backbone whose config loses an argument is refused with
    the weight that differs (keras-hub 0.32's `EfficientNetBackbone` omits `num_features`: only its default,
    1280, rebuilds).

    The encoder receives byol_keras' views: ImageNet-normalised float32 images (`byol_keras.preprocessing.normalize`),
    the input KerasHub's ResNet and EfficientNet presets expect; its ViT presets were trained on [-1, 1] pixels,
    which a warm start then sees shifted.

    Args:
        backbone: a `keras_hub.models.Backbone`, or str: a KerasHub preset name or a local preset directory.
        pooling: `"avg"` (global average of a `(batch, h, w, c)` feature map), `"token"` (the first token of a
            `(batch, tokens, dim)` sequence: ViT's class token), `"mean"` (the mean of the tokens), or `"auto"`:
            "avg" for feature maps, "token" for a sequence with a class token, else "mean". Defaults to "auto".
        input_shape: `(height, width, channels)` of the encoder's input, or None for the backbone's own.
            Defaults to None.
        load_weights: bool, with a preset: load its weights (False: its architecture, randomly initialised).
            Defaults to True.
        name: str or None, the encoder's name. Defaults to None (`"<backbone name>_encoder"`).

    Returns:
        A functional `keras.Model` mapping `(batch, h, w, channels)` images to `(batch, dim)` features.

    Raises:
        ValueError: an unknown `pooling`, a pooling that does not fit the backbone's output, or a backbone
            that its own config does not rebuild.
        ImportError: keras-hub is not installed.

    Example:

    >>> import keras_hub
    >>> backbone = keras_hub.models.ResNetBackbone(
    ...     input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64],
    ...     stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block", image_shape=(16, 16, 3))
    >>> keras_hub_encoder(backbone).output_shape
    (None, 64)
    """
    keras_hub = _keras_hub()
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    if isinstance(backbone, (str, os.PathLike)):
        backbone = keras_hub.models.Backbone.from_preset(os.fspath(backbone), load_weights=load_weights)
    if not isinstance(backbone, keras_hub.models.Backbone):
        raise TypeError(
            "`backbone` must be a keras_hub.models.Backbone, a preset name or a local preset directory. "
            f"Received: backbone={backbone!r} of type {type(backbone).__name__}"
        )
    _check_rebuilds(backbone)
    channels = backbone.input_shape[-1]
    if input_shape is not None and channels is not None and input_shape[-1] != channels:
        # The backbone's first layer has weights for its own channel count (a preset's: 3); Keras would stop at
        # the first call with a shape error deep inside it.
        raise ValueError(
            f"The KerasHub backbone takes images of {channels} channel(s), not {input_shape[-1]}: build it for "
            f"{input_shape[-1]} (e.g. `image_shape=(None, None, {input_shape[-1]})` in its constructor; a preset's "
            f"weights are for {channels}) or give it {channels}-channel images. Received: input_shape={tuple(input_shape)}"
        )
    inputs = keras.Input(tuple(input_shape) if input_shape is not None else tuple(backbone.input_shape[1:]),
                         name="images")
    x = backbone(inputs)
    if pooling == "auto":
        if len(x.shape) == 4:
            pooling = "avg"
        else:
            pooling = "token" if backbone.get_config().get("use_class_token") else "mean"
    rank = 4 if pooling == "avg" else 3
    if len(x.shape) != rank:
        raise ValueError(
            f"`pooling={pooling!r}` needs a backbone output of rank {rank}. Received: backbone "
            f"{backbone.name!r} with output shape {tuple(x.shape)}"
        )
    if pooling == "avg":
        outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    elif pooling == "mean":
        outputs = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    else:
        outputs = layers.TokenPooling(name="pool")(x)
    return keras.Model(inputs, outputs, name=name or f"{backbone.name}_encoder")


def _check_rebuilds(backbone):
    """Raise when `backbone.get_config()` does not rebuild its weights (BYOL's target is built from it)."""
    import keras_hub

    rebuilt = type(backbone).from_config(backbone.get_config())
    mine = [(w.path, tuple(w.shape)) for w in backbone.weights]
    theirs = [(w.path, tuple(w.shape)) for w in rebuilt.weights]
    if mine == theirs:
        return
    differ = next(((a, b) for a, b in zip(mine, theirs) if a != b), None)
    what = (f"weight {differ[0][0]} has shape {differ[0][1]}, rebuilt {differ[1][1]}" if differ
            else f"{len(mine)} weights, rebuilt {len(theirs)}")
    raise ValueError(
        f"KerasHub's {type(backbone).__name__}.get_config() does not rebuild this backbone (keras-hub "
        f"{keras_hub.__version__}): {what}. BYOL builds its target network from the encoder's config, so it cannot "
        "train this backbone; a known case is EfficientNetBackbone, whose config omits `num_features` (only the "
        f"default 1280 rebuilds). Received: backbone={backbone.name!r}"
    )


def encoder_spec(text):
    """The encoder spec of a command-line `--encoder` value.

    Args:
        text: str, `"resnet18"`, `"resnet50"`, `"convnet"` (byol_keras' own, at the preset's or `--width`'s
            size), or `"keras_hub:<preset>"` (a KerasHub preset name, or a local preset directory, made
            absolute), optionally with a pooling: `"keras_hub:<preset>:token"`.

    Returns:
        dict, the spec `build_encoder` takes: `{"name": ...}` plus its arguments.

    Example:

    >>> encoder_spec("keras_hub:resnet_18_imagenet")
    {'name': 'keras_hub', 'preset': 'resnet_18_imagenet', 'pooling': 'auto'}
    """
    if not isinstance(text, str):
        raise TypeError(f"`encoder` must be a str. Received: encoder={text!r}")
    if text in OWN_ENCODERS:
        return {"name": text}
    if text.startswith(KERAS_HUB_PREFIX):
        preset, pooling = text[len(KERAS_HUB_PREFIX):], "auto"
        head, _, tail = preset.rpartition(":")
        if head and tail in POOLINGS:
            preset, pooling = head, tail
        if not preset:
            raise ValueError(f"`encoder` must name a KerasHub preset after 'keras_hub:'. Received: encoder={text!r}")
        if os.path.exists(preset):
            preset = os.path.abspath(preset)
        return {"name": "keras_hub", "preset": preset, "pooling": pooling}
    raise ValueError(
        f"`encoder` must be one of {OWN_ENCODERS} or 'keras_hub:<preset or preset directory>'. Received: encoder={text!r}"
    )


OWN_ENCODERS = ("resnet18", "resnet50", "convnet")


def with_width(spec, width):
    """The encoder spec with its width set: ResNet-18's first stage, or a ConvNet's first layer (doubling)."""
    if spec["name"] not in ("resnet18", "convnet"):
        raise ValueError(
            f"`width` sets the width of byol_keras' resnet18 and convnet; the {spec['name']} encoder has its own. "
            f"Received: width={width}, encoder={spec}"
        )
    if spec["name"] == "convnet":
        depth = len(spec.get("widths", (32, 64, 128)))
        return dict(spec, widths=tuple(width * 2**i for i in range(depth)))
    return dict(spec, width=width)


def build_encoder(spec, image_size, channels=3):
    """The encoder a spec describes (a preset's `"encoder"`, or `encoder_spec` of a command-line `--encoder`).

    Args:
        spec: dict, `{"name": "resnet18" | "resnet50" | "convnet", **constructor arguments}` or
            `{"name": "keras_hub", "preset": str, "pooling": str}`.
        image_size: int, the side of the square images.
        channels: int, channels of the images. Defaults to 3.

    Returns:
        A `keras.Model` mapping `(batch, image_size, image_size, channels)` images to `(batch, dim)` features.

    Example:

    >>> build_encoder({"name": "convnet", "widths": (4, 8)}, 16, channels=1).input_shape
    (None, 16, 16, 1)
    """
    spec = dict(spec)
    name = spec.pop("name", None)
    input_shape = (image_size, image_size, channels)
    if name == "resnet18":
        return resnet18(input_shape=input_shape, **spec)
    if name == "resnet50":
        return resnet50(input_shape=input_shape, **spec)
    if name == "convnet":
        return convnet(input_shape=input_shape, **spec)
    if name == "keras_hub":
        return keras_hub_encoder(spec["preset"], pooling=spec.get("pooling", "auto"), input_shape=input_shape)
    raise ValueError(
        f"Unknown encoder. Expected one of {OWN_ENCODERS} or 'keras_hub'. Received: encoder name={name!r}")
