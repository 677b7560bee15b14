"""Image maths for BYOL, as pure functions on `keras.ops`: evaluation preprocessing and the kernels the
views are made of.

- Preprocessing (data, evaluation and export use it): `normalize` (ImageNet mean and standard deviation on
  the [0, 1] scale), `center_crop_resize` (resize the shorter side, centre crop).
- Kernels (the layers in `byol_keras.augment` compose them): `interpolation_matrix` and
  `separable_transform` (crops and resizes as per-image matrix products), `gaussian_blur_matrix`, and the
  colour jitter in the official code's maths (`adjust_brightness`, `adjust_contrast`,
  `adjust_saturation_hue`) or torchvision's (`adjust_*_torchvision`), ordered per image by `color_jitter`.

Images are `(batch, height, width, 3)`, uint8 or float in [0, 255] unless a function says otherwise.
"""

import math

from keras import ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images):
    """Scale images from [0, 255] to [0, 1] and standardise with the ImageNet mean and std.

    Args:
        images: `(batch, height, width, 3)` uint8 or float tensor with values in [0, 255].

    Returns:
        float32 tensor of the same shape.
    """
    images = ops.cast(images, "float32") / 255.0
    mean = ops.convert_to_tensor(IMAGENET_MEAN, dtype="float32")
    std = ops.convert_to_tensor(IMAGENET_STD, dtype="float32")
    return (images - mean) / std


def center_crop_resize(images, image_size, crop_fraction=0.875):
    """Evaluation preprocessing: resize the shorter side to `image_size / crop_fraction`, crop the centre.

    The paper's test transform: "resize to 256 pixels along the shorter side, then centre crop 224"
    (224 / 256 = 0.875). With `crop_fraction=1.0` the shorter side is resized to `image_size` and the
    centre square is kept. Works on a single image `(h, w, 3)` or on a batch of equally sized images.

    Args:
        images: uint8 or float tensor `(batch, h, w, 3)` or `(h, w, 3)`, values in [0, 255].
        image_size: int, side of the square output.
        crop_fraction: float in (0, 1]. Defaults to 0.875.

    Returns:
        float32 tensor `(batch, image_size, image_size, 3)` (or without batch axis), values in [0, 255].
    """
    import tensorflow as tf

    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(
            f"`crop_fraction` must be in (0, 1]. Received: crop_fraction={crop_fraction}"
        )
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    resize_to = tf.cast(tf.math.ceil(image_size / crop_fraction), tf.float32)
    scale = resize_to / tf.cast(tf.minimum(height, width), tf.float32)
    new_h = tf.maximum(tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32), image_size)
    new_w = tf.maximum(tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32), image_size)
    images = tf.image.resize(images, tf.stack([new_h, new_w]), method="bicubic", antialias=True)
    top = (new_h - image_size) // 2
    left = (new_w - image_size) // 2
    images = images[..., top : top + image_size, left : left + image_size, :]
    return tf.clip_by_value(images, 0.0, 255.0)


def default_blur_kernel_size(image_size):
    """The paper's blur kernel side: 10% of the image side, made odd (23 at 224 px, 3 at 32 px).

    The official code passes `kernel_size = image_size // 10` and builds a kernel of
    `2 * (kernel_size // 2) + 1` taps.

    Args:
        image_size: int, side of the (square) augmented image.

    Returns:
        Odd int >= 1.
    """
    return 2 * ((image_size // 10) // 2) + 1


def official_crop_window(uniforms, height, width, area_range, aspect_range):
    """The official code's `_decode_and_random_crop` window from four uniform draws in [0, 1).

    The area fraction is uniform in `area_range`, the aspect ratio (width / height) log-uniform in
    `aspect_range`; width and height are rounded to whole pixels (half to even, as `tf.round`) and
    clipped to the image's (and to at least one pixel); the offsets are uniform over the free room.
    Elementwise, so one call serves one image or a batch; the callers own the random draws.

    Args:
        uniforms: four float tensors of one shape, uniform in [0, 1): area, aspect, y and x draws.
        height, width: float tensors (or numbers), the image size in pixels.
        area_range, aspect_range: (min, max) pairs.

    Returns:
        float tensors `(y1, x1, crop_height, crop_width)` in whole pixels.
    """
    u_area, u_aspect, u_y, u_x = uniforms
    low, high = math.log(aspect_range[0]), math.log(aspect_range[1])
    target_area = (area_range[0] + u_area * (area_range[1] - area_range[0])) * (height * width)
    aspect = ops.exp(low + u_aspect * (high - low))
    crop_w = ops.clip(ops.round(ops.sqrt(target_area * aspect)), 1.0, width)
    crop_h = ops.clip(ops.round(ops.sqrt(target_area / aspect)), 1.0, height)
    return ops.floor(u_y * (height - crop_h + 1.0)), ops.floor(u_x * (width - crop_w + 1.0)), crop_h, crop_w


TORCHVISION_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries this many boxes before its fallback


def torchvision_crop_window(uniforms, height, width, area_range, aspect_range):
    """torchvision's `RandomResizedCrop.get_params` window, driven by given uniform draws in [0, 1).

    Up to `TORCHVISION_CROP_ATTEMPTS` boxes: area fraction uniform in `area_range`, aspect ratio (width /
    height) log-uniform in `aspect_range`, width and height rounded to whole pixels (half to even, as
    Python's `round`); the first box with `0 < w <= width` and `0 < h <= height` wins and its offsets are
    uniform over the free room. When none fits, torchvision's fallback: the centred crop of the whole image
    with its aspect ratio clamped to `aspect_range`. Elementwise over leading axes, so one call serves one
    image or a batch; the callers own the random draws.

    Args:
        uniforms: four float tensors uniform in [0, 1): area draws `(..., attempts)`, aspect draws
            `(..., attempts)`, y draws `(...)` and x draws `(...)`.
        height, width: float tensors broadcastable to `(...)` (or numbers), the image size in pixels.
        area_range, aspect_range: (min, max) pairs.

    Returns:
        float tensors `(y1, x1, crop_height, crop_width)`, each `(...)`, in whole pixels.
    """
    u_area, u_aspect, u_y, u_x = uniforms
    height = ops.cast(height, "float32")
    width = ops.cast(width, "float32")
    low, high = math.log(aspect_range[0]), math.log(aspect_range[1])
    target_area = (area_range[0] + u_area * (area_range[1] - area_range[0])) * (height * width)[..., None]
    aspect = ops.exp(low + u_aspect * (high - low))
    crop_w = ops.round(ops.sqrt(target_area * aspect))
    crop_h = ops.round(ops.sqrt(target_area / aspect))
    fits = (crop_w > 0) & (crop_w <= width[..., None]) & (crop_h > 0) & (crop_h <= height[..., None])
    first = ops.expand_dims(ops.argmax(ops.cast(fits, "int32"), axis=-1), -1)
    any_fit = ops.any(fits, axis=-1)
    # The fallback: the whole image, narrowed to the extreme aspect ratio it exceeds, centred.
    ratio = width / height
    fallback_w = ops.where(ratio > aspect_range[1], ops.round(height * aspect_range[1]), width)
    fallback_h = ops.where(ratio < aspect_range[0], ops.round(width / aspect_range[0]), height)
    crop_w = ops.where(any_fit, ops.take_along_axis(crop_w, first, axis=-1)[..., 0], fallback_w)
    crop_h = ops.where(any_fit, ops.take_along_axis(crop_h, first, axis=-1)[..., 0], fallback_h)
    y1 = ops.where(any_fit, ops.floor(u_y * (height - crop_h + 1.0)), ops.floor((height - crop_h) / 2.0))
    x1 = ops.where(any_fit, ops.floor(u_x * (width - crop_w + 1.0)), ops.floor((width - crop_w) / 2.0))
    return y1, x1, crop_h, crop_w


def _keys_cubic(x, a=-0.5):
    """Keys' cubic convolution kernel at distances `x` (TensorFlow's bicubic uses a = -0.5)."""
    x = ops.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return ops.where(x <= 1.0, near, ops.where(x < 2.0, far, 0.0))


def interpolation_matrix(start, length, in_size, out_size, interpolation="bicubic"):
    """Per-image matrix that resamples the segment `[start, start + length)` of an axis to `out_size`.

    Pixel centres follow TensorFlow 2's `tf.image.resize` (half-pixel centres): output pixel `s` reads
    source position `start + (s + 0.5) * length / out_size - 0.5`, in pixel-index units. Only the pixels
    of the segment are read: at its ends bilinear repeats the edge pixel and bicubic drops the missing
    taps and renormalises, both as TensorFlow's kernels do at an image border. So for a whole-pixel
    segment the map equals cropping the segment and then `tf.image.resize(..., antialias=False)`, which
    is what the official code does (crop, then resize) and what `pretrain_dataset`'s per-image path does.

    Args:
        start: `(batch,)` float, segment start in pixels (0 is the image's outer edge); whole pixels
            for an exact crop-then-resize.
        length: `(batch,)` float, segment length in pixels (> 0).
        in_size: int or scalar int tensor, source axis length.
        out_size: int, output axis length.
        interpolation: `"bicubic"` (Keys, a = -0.5, as TensorFlow) or `"bilinear"`.
            Defaults to `"bicubic"`.

    Returns:
        float32 `(batch, out_size, in_size)`; every row sums to 1.
    """
    start = ops.cast(start, "float32")
    length = ops.cast(length, "float32")
    steps = (ops.arange(out_size, dtype="float32") + 0.5) / out_size
    src = start[:, None] + steps[None, :] * length[:, None] - 0.5  # (batch, out)
    base = ops.floor(src)
    frac = src - base
    if interpolation == "bilinear":
        taps = ((0, 1.0 - frac), (1, frac))
    elif interpolation == "bicubic":
        taps = tuple((k, _keys_cubic(frac - k)) for k in (-1, 0, 1, 2))
    else:
        raise ValueError(
            "`interpolation` must be 'bilinear' or 'bicubic'. "
            f"Received: interpolation={interpolation}"
        )
    positions = ops.arange(in_size, dtype="int32")
    base = ops.cast(base, "int32")
    # The segment's first and last pixel: taps never read outside them (crop, then resize).
    edge = ops.cast(in_size, "int32") - 1
    first = ops.minimum(ops.maximum(ops.cast(ops.floor(start), "int32"), 0), edge)[:, None]
    last = ops.minimum(ops.maximum(ops.cast(ops.ceil(start + length), "int32")[:, None] - 1, first), edge)
    matrix = 0.0
    for offset, weight in taps:
        index = base + offset
        if interpolation == "bicubic":
            # TensorFlow's bicubic kernel drops the taps outside the image (renormalised below).
            inside = ops.logical_and(index >= first, index <= last)
            weight = ops.where(inside, weight, 0.0)
        # A one-hot row per tap. Bilinear taps outside the segment land on its edge pixel, as
        # TensorFlow's bilinear kernel clamps its indices.
        index = ops.minimum(ops.maximum(index, first), last)
        hits = ops.cast(ops.equal(index[..., None], positions), "float32")
        matrix = matrix + hits * weight[..., None]
    if interpolation == "bicubic":
        matrix = matrix / ops.sum(matrix, axis=-1, keepdims=True)
    return matrix


def separable_transform(images, rows, cols):
    """Apply a per-image linear map to each image axis: `out[b] = rows[b] @ images[b] @ cols[b].T`.

    Args:
        images: `(batch, height, width, channels)` float32.
        rows: `(batch, out_height, height)` float32.
        cols: `(batch, out_width, width)` float32.

    Returns:
        float32 `(batch, out_height, out_width, channels)`.
    """
    images = ops.einsum("bsh,bhwc->bswc", rows, images)
    return ops.einsum("btw,bswc->bstc", cols, images)


def gaussian_blur_matrix(sigma, size, kernel_size):
    """Per-image banded matrix of a 1-D Gaussian blur with zero padding ("SAME" convolution).

    The kernel `exp(-t^2 / (2 sigma^2))`, `t` in `[-kernel_size // 2, kernel_size // 2]`, is
    normalised over all its taps, so pixels near the border lose the weight of the taps that fall
    outside the image, as in the official code's zero-padded depthwise convolution.

    Args:
        sigma: `(batch,)` float, standard deviation in pixels.
        size: int, length of the image axis.
        kernel_size: odd int, number of taps.

    Returns:
        float32 `(batch, size, size)`, symmetric.
    """
    radius = kernel_size // 2
    sigma = ops.cast(sigma, "float32")[:, None, None]
    taps = ops.arange(-radius, radius + 1, dtype="float32")
    norm = ops.sum(ops.exp(-ops.square(taps)[None, :] / (2.0 * sigma[:, 0] ** 2)), axis=-1)
    position = ops.arange(size, dtype="float32")
    distance = position[:, None] - position[None, :]
    inside = ops.cast(ops.abs(distance) <= radius, "float32")
    weights = ops.exp(-ops.square(distance)[None] / (2.0 * ops.square(sigma))) * inside
    return weights / norm[:, None, None]


def _spatial_axes(channel_axis):
    """The height and width axes of a batch whose channels are on `channel_axis` (-1 or 1)."""
    if channel_axis not in (-1, 3, 1):
        raise ValueError(f"`channel_axis` must be -1 (channels last) or 1 (channels first). Received: {channel_axis}")
    return (2, 3) if channel_axis == 1 else (1, 2)


def _per_image(values):
    """`(batch,)` → `(batch, 1, 1, 1)`, broadcastable over an image batch in either layout."""
    return ops.cast(values, "float32")[:, None, None, None]


def _rgb(images, channel_axis):
    if channel_axis == 1:
        return images[:, 0], images[:, 1], images[:, 2]
    return images[..., 0], images[..., 1], images[..., 2]


def adjust_brightness(images, delta):
    """Add a per-image `delta` to every channel and clip to [0, 1] (TensorFlow-style brightness).

    Args:
        images: `(batch, h, w, 3)` (or channels first) float32 in [0, 1].
        delta: `(batch,)` float, additive shift on the [0, 1] scale.

    Returns:
        float32, the shape of `images`, in [0, 1].
    """
    return ops.clip(images + _per_image(delta), 0.0, 1.0)


def adjust_contrast(images, factor, channel_axis=-1):
    """Scale each channel's deviation from its own spatial mean by `factor`, then clip to [0, 1].

    Args:
        images: `(batch, h, w, 3)` float32 in [0, 1], or `(batch, 3, h, w)` with `channel_axis=1`.
        factor: `(batch,)` float, 1 keeps the image.
        channel_axis: -1 (channels last) or 1 (channels first). Defaults to -1.

    Returns:
        float32, the shape of `images`, in [0, 1].
    """
    mean = ops.mean(images, axis=_spatial_axes(channel_axis), keepdims=True)
    return ops.clip((images - mean) * _per_image(factor) + mean, 0.0, 1.0)


def adjust_saturation_hue(images, saturation_factor, hue_delta, channel_axis=-1):
    """Multiply the HSV saturation by `saturation_factor` (clipped to [0, 1]), rotate hue by `hue_delta`.

    TensorFlow's `rgb_to_hsv` → scale S, shift H → `hsv_to_rgb`, written as one pointwise expression: with
    `v = max(r, g, b)` (kept), the new chroma `v * clip(s * factor, 0, 1)` and the new hue `h'`, each channel is
    `v - chroma * clip(min(k, 4 - k), 0, 1)` with `k = (n + 6 h') mod 6`, n = 5, 3, 1 for r, g, b (the standard
    closed form of `hsv_to_rgb`). Equal to `tf.image.adjust_saturation` then `adjust_hue` up to float rounding,
    with no intermediate HSV image (XLA fuses it into one loop; channels first it vectorises best).

    Args:
        images: `(batch, h, w, 3)` float32 in [0, 1], or `(batch, 3, h, w)` with `channel_axis=1`.
        saturation_factor: `(batch,)` float, 1 keeps the saturation.
        hue_delta: `(batch,)` float, rotation in turns of the colour wheel (0.5 is half a turn).
        channel_axis: -1 (channels last) or 1 (channels first). Defaults to -1.

    Returns:
        float32, the shape of `images`, in [0, 1].
    """
    _spatial_axes(channel_axis)
    red, green, blue = _rgb(images, channel_axis)
    value = ops.maximum(ops.maximum(red, green), blue)
    spread = value - ops.minimum(ops.minimum(red, green), blue)
    safe_spread = ops.where(spread > 0.0, spread, 1.0)
    # Hue in sixths of a turn, TensorFlow's rgb_to_hsv: red, then green, decide ties; grey has hue 0.
    sixths = ops.where(
        value == red,
        (green - blue) / safe_spread,
        ops.where(value == green, (blue - red) / safe_spread + 2.0, (red - green) / safe_spread + 4.0),
    )
    sixths = ops.where(spread > 0.0, sixths, 0.0)
    hue = sixths / 6.0 + ops.cast(hue_delta, "float32")[:, None, None]
    sixths = 6.0 * (hue - ops.floor(hue))  # Wrap around the colour wheel.
    saturation = ops.where(value > 0.0, spread / ops.where(value > 0.0, value, 1.0), 0.0)
    chroma = value * ops.clip(saturation * ops.cast(saturation_factor, "float32")[:, None, None], 0.0, 1.0)
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = offset + sixths
        k = k - 6.0 * ops.floor(k / 6.0)
        channels.append(value - chroma * ops.clip(ops.minimum(k, 4.0 - k), 0.0, 1.0))
    return ops.clip(ops.stack(channels, axis=channel_axis), 0.0, 1.0)


GRAYSCALE_WEIGHTS = (0.2989, 0.5870, 0.1140)  # ITU-R 601 luma, as KerasCV's and torchvision's grayscale


def _luma(images, channel_axis=-1):
    """Grayscale `(batch, h, w, 1)` (or `(batch, 1, h, w)`) of RGB images (`GRAYSCALE_WEIGHTS`)."""
    red, green, blue = _rgb(images, channel_axis)
    luma = GRAYSCALE_WEIGHTS[0] * red + GRAYSCALE_WEIGHTS[1] * green + GRAYSCALE_WEIGHTS[2] * blue
    return ops.expand_dims(luma, channel_axis)


def _blend(images, other, factor):
    """`clip(factor * images + (1 - factor) * other, 0, 1)`, per image; torchvision's `_blend`."""
    factor = _per_image(factor)
    return ops.clip(factor * images + (1.0 - factor) * other, 0.0, 1.0)


def adjust_brightness_torchvision(images, factor):
    """Multiply every pixel by a per-image `factor`, clip to [0, 1] (torchvision's `adjust_brightness`).

    Args:
        images: `(batch, h, w, 3)` (or channels first) float32 in [0, 1].
        factor: `(batch,)` float >= 0, 1 keeps the image.

    Returns:
        float32, the shape of `images`, in [0, 1].
    """
    return _blend(images, 0.0, factor)


def adjust_contrast_torchvision(images, factor, channel_axis=-1):
    """Blend each image with the mean of its grayscale, one scalar per image (torchvision's).

    Args:
        images: `(batch, h, w, 3)` float32 in [0, 1], or `(batch, 3, h, w)` with `channel_axis=1`.
        factor: `(batch,)` float >= 0, 1 keeps the image.
        channel_axis: -1 (channels last) or 1 (channels first). Defaults to -1.

    Returns:
        float32, the shape of `images`, in [0, 1].
    """
    return _blend(images, ops.mean(_luma(images, channel_axis), axis=(1, 2, 3), keepdims=True), factor)


def adjust_saturation_torchvision(images, factor, channel_axis=-1):
    """Blend each image with its own grayscale (torchvision's `adjust_saturation`).

    Args:
        images: `(batch, h, w, 3)` float32 in [0, 1], or `(batch, 3, h, w)` with `channel_axis=1`.
        factor: `(batch,)` float >= 0, 1 keeps the image, 0 makes it gray.
        channel_axis: -1 (channels last) or 1 (channels first). Defaults to -1.

    Returns:
        float32, the shape of `images`, in [0, 1].
    """
    return _blend(images, _luma(images, channel_axis), factor)


JITTER_STYLES = ("tensorflow", "torchvision")


def color_jitter(images, brightness, contrast, saturation, hue, order, style="tensorflow", channel_axis=-1):
    """The official colour jitter: four adjustments, each image in its own order, clipped after each.

    Each slot applies, per image, the adjustment `order[:, slot]` names (0 brightness, 1 contrast,
    2 saturation, 3 hue); the other three run with their identity parameters (delta 0, factor 1), which
    keeps the computation vectorised.

    `style="torchvision"` computes what `torchvision.transforms.ColorJitter` (which lightly and most
    PyTorch BYOL code use) computes for the same draws: brightness multiplies by `1 + brightness`
    (a factor in `[1 - b, 1 + b]` rather than a shift by up to `b`), contrast blends towards the
    image's mean *grayscale* value (one scalar, not each channel's mean), saturation blends with the
    image's grayscale (not a multiplication of HSV saturation, which keeps each pixel's maximum);
    hue is the same rotation. Each adjustment clips to [0, 1], as torchvision's do.

    Args:
        images: `(batch, h, w, 3)` float32 in [0, 1], or `(batch, 3, h, w)` with `channel_axis=1` (faster
            under XLA on a CPU: each channel is a contiguous plane).
        brightness: `(batch,)` brightness draw in `[-b, b]`: the additive delta (TensorFlow style)
            or the factor minus 1 (torchvision style).
        contrast: `(batch,)` contrast factor.
        saturation: `(batch,)` saturation factor.
        hue: `(batch,)` hue delta in turns.
        order: `(batch, 4)` int, a permutation of `(0, 1, 2, 3)` per image.
        style: `"tensorflow"` (the official code's maths) or `"torchvision"`. Defaults to
            `"tensorflow"`.
        channel_axis: -1 (channels last) or 1 (channels first). Defaults to -1.

    Returns:
        float32, the shape of `images`, in [0, 1].
    """
    if style not in JITTER_STYLES:
        raise ValueError(f"`style` must be one of {JITTER_STYLES}. Received: style={style!r}")
    zero = ops.zeros_like(brightness)
    one = ops.ones_like(brightness)
    for slot in range(4):
        op = order[:, slot]
        if style == "tensorflow":
            images = adjust_brightness(images, ops.where(op == 0, brightness, zero))
            images = adjust_contrast(images, ops.where(op == 1, contrast, one), channel_axis)
            images = adjust_saturation_hue(
                images, ops.where(op == 2, saturation, one), ops.where(op == 3, hue, zero), channel_axis
            )
        else:
            images = adjust_brightness_torchvision(images, ops.where(op == 0, 1.0 + brightness, one))
            images = adjust_contrast_torchvision(images, ops.where(op == 1, contrast, one), channel_axis)
            images = adjust_saturation_torchvision(images, ops.where(op == 2, saturation, one), channel_axis)
            images = adjust_saturation_hue(images, one, ops.where(op == 3, hue, zero), channel_axis)
    return images


def grayscale(images, channel_axis=-1):
    """Each image as its ITU-R 601 luma (`GRAYSCALE_WEIGHTS`) in all three channels: KerasCV's `Grayscale`
    (`output_channels=3`), `tf.image.rgb_to_grayscale` and torchvision's, in either layout.

    Args:
        images: `(batch, h, w, 3)` float, or `(batch, 3, h, w)` with `channel_axis=1`.
        channel_axis: -1 (channels last) or 1 (channels first). Defaults to -1.

    Returns:
        float32, the shape of `images`.
    """
    _spatial_axes(channel_axis)
    return ops.repeat(_luma(images, channel_axis), 3, axis=channel_axis)


def solarize(images, threshold):
    """Invert every value at or above `threshold`: `where(x < threshold, x, 1 - x)` on the [0, 1] scale,
    KerasCV's `Solarization` with a fixed threshold and no addition.

    Args:
        images: float in [0, 1], any layout.
        threshold: float in [0, 1].

    Returns:
        float32, the shape of `images`.
    """
    return ops.where(images < threshold, images, 1.0 - images)


def _select(mask, new, old):
    """Per-image choice: `new[b]` where `mask[b]`, else `old[b]`. mask: `(batch,)` bool."""
    return ops.where(mask[:, None, None, None], new, old)
