"""The views' Gaussian blur: one sigma per image, the paper's kernel size, as banded matrix products.

Pure functions on `keras.ops`.
"""

from keras import ops

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
