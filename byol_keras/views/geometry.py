"""Crop geometry of the views: where a crop box falls, and the resize of that box as matrix products.

- `torchvision_crop_window` (torchvision's `RandomResizedCrop.get_params`) and `official_crop_window` (the
  official code's `_decode_and_random_crop`): a box from uniforms, on the image's own height and width.
- `interpolation_matrix` and `separable_transform`: a crop and resize (bicubic or bilinear, half-pixel centres as
  TensorFlow 2's `tf.image.resize`) as one per-image matrix product per axis; a flip is the same matrix reversed.

Pure functions on `keras.ops`. Images are `(batch, height, width, channels)` unless a function says otherwise.
"""

import math

from keras import ops

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
