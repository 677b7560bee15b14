"""Image maths for BYOL: evaluation preprocessing and the kernels the views are made of.

Pure functions on `keras.ops`, except `center_crop_resize`, which calls TensorFlow (`tf.image.resize` to a
size computed from each image's own shape at run time); data, evaluation and export run it in `tf.data` or a
SavedModel, where TensorFlow is there anyway.

- Preprocessing (data, evaluation and export use it): `normalize` (ImageNet mean and standard deviation on
  the [0, 1] scale), `center_crop_resize` (resize the shorter side, centre crop).
- Kernels (the layers in `byol_keras.augment` compose them): `interpolation_matrix` and
  `separable_transform` (crops and resizes as per-image matrix products), `gaussian_blur` (and the dense
  `gaussian_blur_matrix` it equals), and the
  colour jitter in the official code's maths (`adjust_brightness`, `adjust_contrast`,
  `adjust_saturation_hue`) or torchvision's (`adjust_*_torchvision`), ordered per image by `color_jitter`.

Images are `(batch, height, width, 3)`, uint8 or float in [0, 255] unless a function says otherwise.
"""

import math

from keras import ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def channel_stats(channels):
    """The mean and standard deviation (on the [0, 1] scale) `normalize` uses for images of `channels` channels.

    Three channels: ImageNet's per-channel values. Any other count (grayscale, 4-band tiles): every channel gets
    the average of ImageNet's three, `(0.449, 0.226)`, the usual choice for grayscale.

    Args:
        channels: int > 0.

    Returns:
        `(mean, std)`, two tuples of `channels` floats.
    """
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    return (mean,) * channels, (std,) * channels


def normalize(images):
    """Scale images from [0, 255] to [0, 1] and standardise with the ImageNet mean and std (`channel_stats`).

    Args:
        images: `(batch, height, width, channels)` uint8 or float tensor with values in [0, 255]; channels 3
            (RGB), or any other count with a known static size (1 for grayscale).

    Returns:
        float32 tensor of the same shape.
    """
    images = ops.cast(images, "float32") / 255.0
    channels = images.shape[-1]
    mean, std = channel_stats(3 if channels is None else channels)
    mean = ops.convert_to_tensor(mean, dtype="float32")
    std = ops.convert_to_tensor(std, dtype="float32")
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
    # A whole-pixel window given as fractions of the image comes back with float rounding (2 px as
    # 1.9999999, which XLA and eager may round differently): ends within 1e-3 px of a whole pixel are that
    # pixel, so the segment's first and last pixel below are the window's own.
    end = _snap_to_pixel(start + length)
    start = _snap_to_pixel(start)
    length = end - start
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


def _snap_to_pixel(position, tolerance=1e-3):
    """`position` rounded to the nearest whole pixel where it lies within `tolerance` of it, else unchanged."""
    nearest = ops.round(position)
    return ops.where(ops.abs(position - nearest) <= tolerance, nearest, position)


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


def gaussian_blur(images, sigma, kernel_size, block=32):
    """Blur channels-first images with a per-image Gaussian: the product by `gaussian_blur_matrix` on both axes.

    The same result as multiplying by the `(size, size)` banded matrix, without its zeros: each block of
    `block` output rows (at least `kernel_size - 1`) reads only the `block + kernel_size - 1` input rows that
    reach it, so the matrix products do about `(block + kernel_size - 1) / size` of the dense work (54/224 at
    224 px, the paper's 23 taps). The input's windows are copied once per axis; XLA fuses the first copy into
    whatever computed the images.

    Args:
        images: `(batch, channels, height, width)` float32.
        sigma: `(batch,)` float, standard deviation in pixels.
        kernel_size: odd int, number of taps (zero padding outside the image, as `gaussian_blur_matrix`).
        block: int, output rows (and columns) per matrix product. Defaults to 32.

    Returns:
        float32, the shape of `images`.
    """
    radius = kernel_size // 2
    step = max(block, 2 * radius)
    sigma = ops.cast(sigma, "float32")[:, None, None]
    taps = ops.arange(-radius, radius + 1, dtype="float32")
    norm = ops.sum(ops.exp(-ops.square(taps)[None, :] / (2.0 * sigma[:, 0] ** 2)), axis=-1)
    # band[b, s, j]: weight of the window's input row j for the block's output row s.
    offset = ops.arange(step + 2 * radius, dtype="float32")[None, :] - ops.arange(step, dtype="float32")[:, None] - radius
    inside = ops.cast(ops.abs(offset) <= radius, "float32")
    band = ops.exp(-ops.square(offset)[None] / (2.0 * ops.square(sigma))) * inside / norm[:, None, None]

    def windows(x, axis, size):
        """`x`'s axis `axis` as `blocks` overlapping windows of `step + 2 * radius` (zero-padded): one gather of
        the padded axis, which XLA fuses with the padding (and with what computed `x`) into one pass."""
        blocks = -(-size // step)
        padding = [(0, 0)] * 4
        padding[axis] = (radius, blocks * step + radius - size)
        rows = [block * step + offset for block in range(blocks) for offset in range(step + 2 * radius)]
        shape = list(x.shape)
        shape[0] = -1
        shape[axis : axis + 1] = [blocks, step + 2 * radius]
        return ops.reshape(ops.take(ops.pad(x, padding), rows, axis=axis), shape), blocks

    channels, height, width = images.shape[1], images.shape[2], images.shape[3]
    rows, blocks = windows(images, 2, height)  # (b, c, blocks, window, w)
    lhs = ops.broadcast_to(band[:, None, None], (ops.shape(rows)[0], channels, blocks, step, step + 2 * radius))
    images = ops.reshape(ops.matmul(lhs, rows), (-1, channels, blocks * step, width))[:, :, :height]
    cols, blocks = windows(images, 3, width)  # (b, c, h, blocks, window)
    images = ops.einsum("bchkj,bsj->bchks", cols, band)
    return ops.reshape(images, (-1, channels, height, blocks * step))[..., :width]


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

    TensorFlow's `rgb_to_hsv` → scale S, shift H → `hsv_to_rgb`, as one pointwise expression with no HSV image.
    With `v = max(r, g, b)` (kept) and `spread = v - min(r, g, b)`, the closed form of `hsv_to_rgb` gives each
    channel as `v - chroma' * clip(min(k, 4 - k), 0, 1)` with `k = (n + 6 h') mod 6`, n = 5, 3, 1 for r, g, b, the
    new hue `h'` and the new chroma `chroma' = v * clip(s * factor, 0, 1)`. Here every term is multiplied by
    `spread` (the hue in sixths times `spread` is a difference of channels; the wrap-arounds are comparisons), so
    the only division is where the saturation clips: XLA then fuses the whole adjustment into one loop. Equal to
    `tf.image.adjust_saturation` then `adjust_hue` up to float rounding (tested).

    Args:
        images: `(batch, h, w, 3)` float32 in [0, 1], or `(batch, 3, h, w)` with `channel_axis=1`.
        saturation_factor: `(batch,)` float >= 0, 1 keeps the saturation.
        hue_delta: `(batch,)` float, rotation in turns of the colour wheel (0.5 is half a turn).
        channel_axis: -1 (channels last) or 1 (channels first). Defaults to -1.

    Returns:
        float32, the shape of `images`, in [0, 1].
    """
    return ops.clip(_saturation_hue(images, saturation_factor, hue_delta, channel_axis), 0.0, 1.0)


def _saturation_hue(images, saturation_factor, hue_delta, channel_axis):
    """`adjust_saturation_hue` without its final clip: in [0, 1] up to float rounding (each channel lies between
    `v - chroma'` >= 0 and `v`). Inside `color_jitter`, where the next step clips anyway, the clip cost a pass: XLA
    materialised the adjusted images twice, clipped for the contrast's mean and unclipped for the steps after."""
    _spatial_axes(channel_axis)
    red, green, blue = _rgb(images, channel_axis)
    value = ops.maximum(ops.maximum(red, green), blue)
    spread = value - ops.minimum(ops.minimum(red, green), blue)
    factor = ops.cast(saturation_factor, "float32")[:, None, None]
    delta = ops.cast(hue_delta, "float32")[:, None, None]
    delta = delta - ops.floor(delta)  # the same rotation, in [0, 1) of a turn
    turn = 6.0 * spread
    # spread * (hue in sixths), TensorFlow's rgb_to_hsv: red, then green, decide ties; grey has hue 0.
    hue = ops.where(
        value == red,
        green - blue,
        ops.where(value == green, blue - red + 2.0 * spread, red - green + 4.0 * spread),
    )
    hue = hue + delta * turn  # in [-spread, 11 spread)
    hue = ops.where(hue >= turn, hue - turn, hue)  # in [-spread, turn): each channel's k below is >= 0
    # chroma' / spread: the factor, or v / spread where the new saturation would pass 1.
    ratio = ops.where(factor * spread > value, value / ops.where(spread > 0.0, spread, 1.0), factor)
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = offset * spread + hue
        k = ops.where(k >= turn, k - turn, k)
        channels.append(value - ratio * ops.clip(ops.minimum(k, 4.0 * spread - k), 0.0, spread))
    return ops.stack(channels, axis=channel_axis)


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

    Each image gets the adjustment `order[:, slot]` names in each slot (0 brightness, 1 contrast, 2 saturation,
    3 hue). Vectorised without running all four in every slot: contrast needs the mean of the image it meets, so
    the batch is computed in two passes, the adjustments before each image's contrast, then its contrast and the
    ones after. Each pass is a fixed template of pointwise steps whose per-image parameters place each adjustment
    in its slot (identity elsewhere): for the TensorFlow maths HSV, brightness, HSV (saturation and hue both keep
    the HSV value and commute, so two that meet are one step); for torchvision's two affine steps, hue, two affine
    steps (brightness and saturation are `clip(a * x + b * gray(x))`). Tested against the four adjustments applied
    one after the other, for all 24 orders, in both styles.

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
    axes = _spatial_axes(channel_axis)
    slot = ops.argsort(ops.cast(order, "int32"), axis=1)  # slot[:, adjustment]: where each image runs it
    at_b, at_c, at_s, at_h = (slot[:, k] for k in range(4))
    one = ops.ones_like(brightness)
    zero = ops.zeros_like(brightness)

    def side(images, before):
        """The adjustments on one side of each image's contrast."""
        on_b, on_s, on_h = ((at < at_c) if before else (at > at_c) for at in (at_b, at_s, at_h))
        if style == "tensorflow":
            s_late, h_late = on_s & on_b & (at_s > at_b), on_h & on_b & (at_h > at_b)
            # Unclipped HSV steps (`_saturation_hue`): the brightness and the contrast after them clip.
            images = _saturation_hue(
                images, ops.where(on_s & ~s_late, saturation, one), ops.where(on_h & ~h_late, hue, zero), channel_axis
            )
            images = adjust_brightness(images, ops.where(on_b, brightness, zero))
            return _saturation_hue(images, ops.where(s_late, saturation, one), ops.where(h_late, hue, zero), channel_axis)
        b_late, s_late = on_b & on_h & (at_b > at_h), on_s & on_h & (at_s > at_h)
        images = _brightness_saturation(images, on_b & ~b_late, on_s & ~s_late, 1.0 + brightness, saturation, at_b < at_s, channel_axis)
        images = adjust_saturation_hue(images, one, ops.where(on_h, hue, zero), channel_axis)  # clipped: faster here
        return _brightness_saturation(images, b_late, s_late, 1.0 + brightness, saturation, at_b < at_s, channel_axis)

    images = side(images, before=True)
    if style == "tensorflow":
        mean = ops.mean(images, axis=axes, keepdims=True)  # each channel's
    else:
        mean = ops.mean(_luma(images, channel_axis), axis=(1, 2, 3), keepdims=True)  # the grayscale's
    factor = _per_image(contrast)
    images = ops.clip(factor * images + (1.0 - factor) * mean, 0.0, 1.0)
    return ops.clip(side(images, before=False), 0.0, 1.0)


def brightness_contrast(images, brightness, contrast, order, style="tensorflow", channel_axis=-1):
    """The colour jitter of images without colour (grayscale, or bands that are not RGB): brightness and contrast
    in each image's drawn order, as `color_jitter` applies them; saturation and hue have no meaning here.

    On a gray RGB image (three equal channels) `color_jitter` gives this function's result in every channel
    (saturation and hue leave gray unchanged; the luma of gray is itself): tested.

    Args:
        images: `(batch, h, w, channels)` float32 in [0, 1], or `(batch, channels, h, w)` with `channel_axis=1`.
        brightness: `(batch,)` delta (TensorFlow's maths) or factor − 1 (torchvision's), as `color_jitter`.
        contrast: `(batch,)` factor.
        order: `(batch, 4)` int permutation of `JITTER_OPS`, as `color_jitter`; only the order of brightness (0)
            and contrast (1) is read.
        style: `"tensorflow"` (each channel's own mean in the contrast) or `"torchvision"` (one mean per image,
            over every channel). Defaults to `"tensorflow"`.
        channel_axis: -1 or 1. Defaults to -1.

    Returns:
        float32, the shape of `images`, in [0, 1].
    """
    if style not in JITTER_STYLES:
        raise ValueError(f"`style` must be one of {JITTER_STYLES}. Received: style={style!r}")
    axes = _spatial_axes(channel_axis)
    slot = ops.argsort(ops.cast(order, "int32"), axis=1)
    brightness_first = slot[:, 0] < slot[:, 1]

    def bright(x):
        if style == "tensorflow":
            return adjust_brightness(x, brightness)
        return adjust_brightness_torchvision(x, 1.0 + brightness)

    def contrasted(x):
        mean_axes = axes if style == "tensorflow" else (1, 2, 3)
        mean = ops.mean(x, axis=mean_axes, keepdims=True)
        factor = _per_image(contrast)
        return ops.clip(factor * x + (1.0 - factor) * mean, 0.0, 1.0)

    return _select(brightness_first, contrasted(bright(images)), bright(contrasted(images)))


def _brightness_saturation(images, on_b, on_s, brightness, saturation, b_first, channel_axis):
    """torchvision's brightness (factor `brightness`) and saturation where `on_b` / `on_s`, in their order:
    two steps `clip(a * x + (1 - a') * gray(x), 0, 1)`, each image's first adjustment in the first."""
    one = ops.ones_like(brightness)
    first_b = on_b & (b_first | ~on_s)
    first_s = on_s & ~first_b
    for here_b, here_s in ((first_b, first_s), (on_b & ~first_b, on_s & ~first_s)):
        scale = _per_image(ops.where(here_b, brightness, ops.where(here_s, saturation, one)))
        gray_weight = _per_image(ops.where(here_s, 1.0 - saturation, ops.zeros_like(saturation)))
        images = ops.clip(scale * images + gray_weight * _luma(images, channel_axis), 0.0, 1.0)
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
