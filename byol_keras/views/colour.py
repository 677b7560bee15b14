"""The views' colour stages: the jitter (the official code's maths or torchvision's), grayscale, solarize.

- The official code's maths: `adjust_brightness`, `adjust_contrast`, `adjust_saturation_hue`;
  torchvision's: `adjust_*_torchvision`; `color_jitter` applies them in a per-image random order, and
  `brightness_contrast` is the jitter of images without hue and saturation (grayscale views).
- `grayscale` (ITU-R 601 luma, `GRAYSCALE_WEIGHTS`), `solarize`.
- `select(mask, new, old)`: per image, `new` where `mask` else `old` (how every stage is applied with its
  probability).

Pure functions on `keras.ops`; images on the [0, 1] scale, channels last unless `channel_axis` says otherwise.
"""

from keras import ops

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

    return select(brightness_first, contrasted(bright(images)), bright(contrasted(images)))


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


def select(mask, new, old):
    """Per-image choice: `new[b]` where `mask[b]`, else `old[b]`. mask: `(batch,)` bool."""
    return ops.where(mask[:, None, None, None], new, old)
