"""Encoded image files to RGB (or grayscale) pixels: the one decoder of training, evaluation and serving.

Every path that turns JPEG/PNG/GIF/BMP bytes into pixels goes through this module: the folder loaders and
the per-image pretraining path of `byol_keras.data` (whole images and JPEG windows) and the serving
signatures of `byol_keras.export`. Two things are decided here, once:

- **The JPEG decoder.** libjpeg's accurate integer IDCT (`dct_method="INTEGER_ACCURATE"`), which is libjpeg's
  own default and what Pillow (hence torchvision) decodes with. TensorFlow's default (`tf.io.decode_image`,
  `tf.io.decode_jpeg` without `dct_method`) is a faster, less exact IDCT, about one level per pixel away
  (0.96 / 255 on average on CIFAR-10's JPEGs): an encoder trained on one and served with the other sees a
  different photo (a train/serve skew).
- **The pixel limit, checked before decoding.** The size is read from the file's header (JPEG: the frame
  header, `tf.image.extract_jpeg_shape`; PNG: IHDR; GIF: the logical screen and every frame's image
  descriptor; BMP: the DIB header) and an image above `max_pixels` is refused with `InvalidArgumentError`
  naming its size and the limit, before the decoder allocates anything. A 1 MB PNG can declare
  20,000 x 20,000 pixels (a zlib stream of zeros), which TensorFlow would decode into 1.2 GB and more.
  A GIF counts the pixels of all its frames, because TensorFlow's GIF decoder reads every frame even when
  only the first is returned.

What is refused, always with `InvalidArgumentError` (TF Serving's `INVALID_ARGUMENT`): empty input; formats
other than JPEG, PNG, GIF and BMP (TensorFlow's `decode_image` would also take WebP and JPEG XL, whose sizes
this module does not read); images above `max_pixels`; malformed or truncated files (the decoder's own
error). Palette BMPs (8 bits per pixel or fewer) are decoded with Pillow where Python is available
(`python=True`, the training loaders), because TensorFlow's BMP decoder ignores their palette and returns
wrong colours without an error; a graph that must run without Python (a SavedModel) refuses them.

Images are RGB (`channels=3`, grayscale files replicated) or grayscale (`channels=1`, for images kept as one
channel): the luma of the RGB pixels, ITU-R 601 (`tf.image.rgb_to_grayscale`), which gives a grayscale file its own
pixels back and an RGB file its luma. Every path converts the same way: training's whole images and JPEG windows,
the evaluation arrays and the serving signatures.

Example:

>>> png = tf.io.encode_png(tf.zeros((4, 6, 3), tf.uint8))
>>> tuple(decode_image(png).shape)
(4, 6, 3)
>>> [int(x) for x in image_header(png)]  # format (PNG), height, width, pixels: read from the header
[2, 4, 6, 24]
>>> decode_image(png, max_pixels=23)
Traceback (most recent call last):
...
tensorflow.python.framework.errors_impl.InvalidArgumentError: PNG of 4x6 = 24 pixels is above the limit of 23 pixels (max_pixels); refused before decoding.
"""

import io
import struct

import numpy as np
import tensorflow as tf

from byol_keras.validation import check_positive_int

# Pillow's `Image.MAX_IMAGE_PIXELS` (1024 ** 3 // 4 // 3: a quarter of a GiB of 24-bit pixels), above which
# Pillow warns of a decompression bomb, and the default limit here: a user who moves a folder from a
# torchvision pipeline finds the same images accepted. It admits every camera up to 89 megapixels (phones
# at 12-50, full-frame bodies at 24-61) and refuses the 108- and 200-megapixel phone modes. One such image
# takes 268 MB as uint8 and, measured, 2.0 GiB at the serving preprocessing's peak (24 bytes a pixel).
DEFAULT_MAX_PIXELS = 89_478_485

# libjpeg's accurate integer IDCT, as Pillow decodes (module docstring).
JPEG_DCT_METHOD = "INTEGER_ACCURATE"

# Format codes returned by `image_size`.
UNKNOWN, JPEG, PNG, GIF, BMP = 0, 1, 2, 3, 4
FORMAT_NAMES = ("unknown", "JPEG", "PNG", "GIF", "BMP")

_HEADER_BYTES = 32
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Read past the end of a file: padding keeps every header read in range, so a short file reaches its
# decoder, which names what is wrong with it.
_PADDING = b"\0" * _HEADER_BYTES


def _header(contents):
    """The first 32 bytes of the file as an int64 vector (zero-padded when the file is shorter)."""
    head = tf.strings.substr(contents, 0, _HEADER_BYTES)
    head = tf.strings.substr(tf.strings.join([head, _PADDING]), 0, _HEADER_BYTES)
    return tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)


def _starts_with(contents, magic):
    return tf.equal(tf.strings.substr(contents, 0, len(magic)), magic)


def _little_endian(byte_values):
    value = tf.constant(0, tf.int64)
    for shift, byte in enumerate(byte_values):
        value += byte * (256**shift)
    return value


def _big_endian(byte_values):
    return _little_endian(byte_values[::-1])


def image_format(contents):
    """The format code of encoded bytes from their first bytes: `JPEG`, `PNG`, `GIF`, `BMP` or `UNKNOWN`.

    Args:
        contents: scalar tf.string, the encoded file.

    Returns:
        int32 scalar tensor.
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    code = tf.constant(UNKNOWN, tf.int32)
    for magic, value in ((b"BM", BMP), (b"GIF8", GIF), (_PNG_SIGNATURE, PNG), (b"\xff\xd8\xff", JPEG)):
        code = tf.where(_starts_with(contents, magic), tf.constant(value, tf.int32), code)
    return code


def _pointer_jump(successor, values=()):
    """Follow `successor` (int32, every chain ending at a fixed point) to the end, by pointer doubling.

    Returns `(end, sums)`: for every node, the fixed point its chain reaches and, for each array of
    `values`, the sum over the nodes passed on the way (the fixed point's own value must be 0). Each round
    doubles the steps taken, so a chain of m steps takes log2(m) rounds of vectorised gathers: the time
    depends on the length of the file, never on how its blocks are arranged.
    """

    def more(successor, values, moved):
        return moved

    def double(successor, values, moved):
        values = tuple(v + tf.gather(v, successor) for v in values)
        after = tf.gather(successor, successor)
        return after, values, tf.reduce_any(tf.not_equal(after, successor))

    successor, values, _ = tf.while_loop(
        more, double, (successor, tuple(values), tf.constant(True)), parallel_iterations=1
    )
    return successor, values


def _gif_frames(contents):
    """`(frames, sum of the frames' own areas)` of a GIF, from its block structure (int64 scalars).

    A GIF is a 13-byte header, an optional global colour table, then blocks: extensions (0x21, a label) and
    images (0x2C, a 9-byte descriptor holding the frame's width and height, an optional local colour table
    and a code-size byte), each followed by a chain of sub-blocks (a length byte, that many bytes, ...,
    a zero byte), up to the trailer (0x3B). Walked without a per-block loop: first the end of the sub-block
    chain starting at every byte, then the chain of blocks from the first one, both by pointer doubling
    (`_pointer_jump`): O(n log n) vectorised work on a few int32 arrays as long as the file.
    """
    values = tf.cast(tf.io.decode_raw(tf.strings.join([contents, _PADDING]), tf.uint8), tf.int32)
    size = tf.cast(tf.strings.length(contents), tf.int32)
    values = values[:size]
    positions = tf.range(size, dtype=tf.int32)
    # Sub-block chains: from a length byte to the next (past the bytes it counts); a zero byte ends the
    # chain (a fixed point), as does running off the end (the sentinel node `size`).
    hop = tf.where(values == 0, positions, tf.minimum(positions + values + 1, size))
    chain_end, _ = _pointer_jump(tf.concat([hop, [size]], 0))

    def byte(position):
        return tf.gather(tf.concat([values, tf.zeros([16], tf.int32)], 0), tf.minimum(position, size))

    def colour_table(packed):
        # Bit 7: a colour table follows; bits 0-2: it holds 2 ** (n + 1) RGB entries.
        return tf.where(packed >= 128, 3 * tf.bitwise.left_shift(2, tf.bitwise.bitwise_and(packed, 7)), 0)

    # Blocks: every byte that could start one is a node; a node's successor is the byte after its chain.
    candidates = tf.cast(tf.where((values == 0x2C) | (values == 0x21))[:, 0], tf.int32)
    is_image = tf.gather(values, candidates) == 0x2C
    sub_blocks = tf.where(is_image, candidates + 11 + colour_table(byte(candidates + 9)), candidates + 2)
    after = tf.gather(chain_end, tf.minimum(sub_blocks, size)) + 1
    # Node index of each position (-1 where no block can start), then of each successor.
    count = tf.size(candidates)
    node_of = tf.tensor_scatter_nd_update(tf.fill([size + 2], -1), candidates[:, None], tf.range(count))
    successor = tf.gather(node_of, tf.minimum(after, size + 1))
    successor = tf.where(successor < 0, count, successor)  # not a block: the walk ends (node `count`)
    width = byte(candidates + 5) + 256 * byte(candidates + 6)
    height = byte(candidates + 7) + 256 * byte(candidates + 8)
    area = tf.where(is_image, tf.cast(width, tf.int64) * tf.cast(height, tf.int64), 0)
    zero = tf.zeros([1], tf.int64)
    _, (frames, areas) = _pointer_jump(
        tf.concat([successor, [count]], 0), (tf.concat([tf.cast(is_image, tf.int64), zero], 0), tf.concat([area, zero], 0))
    )
    # The first block follows the header and the global colour table.
    first = tf.gather(node_of, tf.minimum(13 + colour_table(byte(tf.constant(10))), size + 1))
    first = tf.where(first < 0, count, first)
    return frames[first], areas[first]


def image_header(contents):
    """Format, height, width and decoded pixel count of an encoded image, read from its header only.

    Nothing is decoded and nothing of the image's size is allocated. For a GIF, `pixels` is the larger
    of the logical screen's area and the sum of its frames' areas (TensorFlow's decoder reads every frame);
    for the other formats it is `height * width`. Unknown formats give zeros (their decoder names the error).

    Args:
        contents: scalar tf.string, the encoded file.

    Returns:
        `(format, height, width, pixels)`: int32 format code, int64 height and width, float64 pixels (a
        float: a PNG header can declare 2**31 x 2**31 pixels, beyond int64).
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    code = image_format(contents)
    header = tf.unstack(_header(contents), num=_HEADER_BYTES)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(contents, output_type=tf.int64)
        return shape[0], shape[1], tf.constant(0, tf.int64)

    def png():
        # IHDR, the first chunk: width and height, big-endian uint32 at bytes 16 and 20.
        return _big_endian(header[20:24]), _big_endian(header[16:20]), tf.constant(0, tf.int64)

    def gif():
        # The logical screen: width and height, little-endian uint16 at bytes 6 and 8.
        _, area = _gif_frames(contents)
        return _little_endian(header[8:10]), _little_endian(header[6:8]), area

    def bmp():
        # BITMAPINFOHEADER: width and height, little-endian int32 at bytes 18 and 22; a negative height
        # means rows stored top-down. TensorFlow's decoder reads these same fields.
        width = _little_endian(header[18:22])
        height = _little_endian(header[22:26])
        width = tf.where(width >= 2**31, width - 2**32, width)
        height = tf.where(height >= 2**31, height - 2**32, height)
        return tf.abs(height), tf.abs(width), tf.constant(0, tf.int64)

    def unknown():
        zero = tf.constant(0, tf.int64)
        return zero, zero, zero

    height, width, frames_area = tf.switch_case(code, [unknown, jpeg, png, gif, bmp])
    pixels = tf.maximum(tf.cast(height, tf.float64) * tf.cast(width, tf.float64), tf.cast(frames_area, tf.float64))
    return code, height, width, pixels


# JPEG markers that start a frame header (SOF0-SOF15 but DHT, JPG and DAC) and that stand alone (no length).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


def file_image_header(path):
    """`image_header` of a file's header, read in Python from its first bytes: `(format, height, width, pixels)`,
    or None where only `image_header` can say.

    The same fields as `image_header` on the whole file, for a folder's scan without TensorFlow's per-file cost: a
    PNG's and a BMP's header fields as `image_header` reads them (a file shorter than 32 bytes zero-padded), zeros
    for an empty file and an unknown format; a JPEG's first frame header, found by walking its marker segments up
    to the start of scan as libjpeg does (`extract_jpeg_shape` reads that far), reading a few bytes a segment, not
    the file. None for a GIF (its frames are counted by `image_header`) and for a JPEG whose markers this walk does
    not follow to a start of scan (a truncated or damaged header): `image_header` (libjpeg) decides those.

    Args:
        path: str, the file.

    Returns:
        `(format code, height, width, pixels)` as Python ints and a float, or None.

    Raises:
        OSError: the file cannot be opened or read.
    """
    with open(path, "rb") as file:
        head = file.read(_HEADER_BYTES)
        padded = head + _PADDING[len(head):]
        if head.startswith(b"BM"):
            width, height = (abs(v) for v in struct.unpack_from("<ii", padded, 18))
            return BMP, height, width, float(height) * float(width)
        if head.startswith(_PNG_SIGNATURE):
            width, height = struct.unpack_from(">II", padded, 16)
            return PNG, height, width, float(height) * float(width)
        if head.startswith(b"GIF8"):
            return None
        if not head.startswith(b"\xff\xd8\xff"):
            return UNKNOWN, 0, 0, 0.0
        size = None
        file.seek(2)
        while True:
            marker = file.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return None  # not a marker where one must be: libjpeg's own rules decide
            code = marker[1]
            while code == 0xFF:  # fill bytes before a marker
                code = file.read(1)
                if not code:
                    return None
                code = code[0]
            if code in _JPEG_STANDALONE:
                continue
            if code in (0xD8, 0xD9):
                return None  # a second start of image, or the end before a scan
            length = file.read(2)
            if len(length) < 2 or struct.unpack(">H", length)[0] < 2:
                return None
            length = struct.unpack(">H", length)[0]
            if code in _JPEG_FRAMES and size is None:
                frame = file.read(5)
                if len(frame) < 5:
                    return None
                size = struct.unpack_from(">HH", frame, 1)
                file.seek(length - 7, 1)
            elif code == 0xDA:  # start of scan: the header is complete
                if size is None or len(file.read(length - 2)) < length - 2:
                    return None
                height, width = size
                return JPEG, height, width, float(height) * float(width)
            else:
                file.seek(length - 2, 1)


def check_max_pixels(max_pixels):
    """Validate a pixel limit: a positive int. Returns it."""
    return check_positive_int("max_pixels", max_pixels)


CHANNELS = (3, 1)  # what files decode to: RGB, or grayscale kept as one channel


def check_channels(channels):
    """Validate a decoded image's channels: 3 (RGB) or 1 (grayscale). Returns it."""
    if isinstance(channels, bool) or channels not in CHANNELS:
        raise ValueError(
            "`channels` must be 3 (RGB) or 1 (grayscale kept as one channel): image files decode to one of the two. "
            f"Received: channels={channels!r}"
        )
    return int(channels)


def to_channels(image, channels):
    """An RGB uint8 image `(..., 3)` as `channels` channels: itself (3) or its ITU-R 601 luma (1).

    The luma is `tf.image.rgb_to_grayscale`'s, rounded back to uint8: a grayscale file decoded to three equal
    channels gets its own pixels back.
    """
    return image if channels == 3 else tf.image.rgb_to_grayscale(image)


def _assert(condition, message):
    if tf.executing_eagerly():
        # The same error as the graph's assertion, without TensorFlow's eager wrapper around the message.
        if not bool(condition):
            raise tf.errors.InvalidArgumentError(None, None, tf.convert_to_tensor(message).numpy().decode())
        return tf.no_op()
    return tf.debugging.Assert(condition, [message], name="check_image")


def checked(contents, max_pixels=DEFAULT_MAX_PIXELS, name=None):
    """The encoded bytes, passed on only once they are known to be a supported image within the limit.

    Raises (when the returned tensor is evaluated) `InvalidArgumentError` for empty input, a format other
    than JPEG/PNG/GIF/BMP, and an image whose header declares more than `max_pixels` pixels; the message
    names `name`, the size and the limit. Decoders fed the returned tensor run only after these checks.

    Args:
        contents: scalar tf.string, the encoded file.
        max_pixels: int, the largest number of pixels accepted (a GIF: all its frames). Defaults to
            `DEFAULT_MAX_PIXELS`.
        name: str or scalar tf.string naming the image at the start of messages (a file path,
            `image_bytes[3]`), or None. Defaults to None.

    Returns:
        `(contents, format code)`, both depending on the checks.
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    name = "" if name is None else tf.strings.join([name, ": "])
    not_empty = tf.strings.length(contents) > 0
    with tf.control_dependencies([_assert(not_empty, tf.strings.join([name, "Input is empty."]))]):
        code = image_format(contents)
    known = tf.not_equal(code, UNKNOWN)
    unknown_message = tf.strings.join(
        [name, "Unknown image file format. One of JPEG, PNG, GIF, BMP required."]
    )
    with tf.control_dependencies([_assert(known, unknown_message)]):
        _, height, width, pixels = image_header(contents)
    kind = tf.gather(tf.constant(FORMAT_NAMES), code)
    too_large = tf.strings.join(
        [
            name, kind, " of ", tf.strings.as_string(height), "x", tf.strings.as_string(width), " = ",
            tf.strings.as_string(pixels, precision=0), " pixels",
            tf.where(tf.equal(code, GIF), " (all frames)", ""),
            " is above the limit of ", str(int(max_pixels)), " pixels (max_pixels); refused before decoding.",
        ]
    )
    with tf.control_dependencies([_assert(pixels <= float(max_pixels), too_large)]):
        return tf.identity(contents), tf.identity(code)


def _palette_bmp(contents):
    # Bits per pixel: little-endian uint16 at byte 28 of a BMP header.
    header = tf.unstack(_header(contents), num=_HEADER_BYTES)
    return tf.logical_and(tf.equal(image_format(contents), BMP), _little_endian(header[28:30]) < 24)


def decode_image(contents, max_pixels=DEFAULT_MAX_PIXELS, python=True, name=None, channels=3):
    """Decode JPEG/PNG/GIF/BMP bytes to an RGB (or grayscale) uint8 image, after the checks of `checked`.

    Grayscale is replicated, palettes are expanded, 16-bit PNGs keep their high byte, alpha is dropped (not
    composited), a GIF gives its first frame, a CMYK JPEG is converted to RGB. JPEGs decode with the
    accurate IDCT (`JPEG_DCT_METHOD`). With `channels=1`, that RGB image's luma (`to_channels`).

    Args:
        contents: scalar tf.string, the encoded file.
        max_pixels: int, the pixel limit (see `checked`). Defaults to `DEFAULT_MAX_PIXELS`.
        python: bool. True: palette BMPs are decoded with Pillow (`tf.py_function`). False, for graphs that
            must run without Python (a SavedModel): they are refused with `InvalidArgumentError`. Defaults
            to True.
        name: str or scalar tf.string naming the image in error messages, or None. Defaults to None.
        channels: 3 (RGB) or 1 (grayscale: the luma, `to_channels`). Defaults to 3.

    Returns:
        uint8 tensor `(height, width, channels)`. Raises `InvalidArgumentError` for what it refuses or cannot
        decode.
    """
    max_pixels = check_max_pixels(max_pixels)
    channels = check_channels(channels)
    contents, code = checked(contents, max_pixels, name)
    palette_bmp = _palette_bmp(contents)
    if not python:
        message = tf.strings.join(
            ["" if name is None else tf.strings.join([name, ": "]), "palette BMPs (8 bits per pixel or fewer) are not accepted: TensorFlow's BMP decoder "
                   "ignores their palette. Send PNG or 24-bit BMP."]
        )
        with tf.control_dependencies([_assert(tf.logical_not(palette_bmp), message)]):
            contents = tf.identity(contents)

    def jpeg():
        return tf.io.decode_jpeg(contents, channels=3, dct_method=JPEG_DCT_METHOD)

    def other():
        # PNG, GIF (its first frame) and BMP through TensorFlow's dispatcher, whose format detection agrees
        # with `image_format`.
        image = tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)
        return tf.ensure_shape(image, [None, None, 3])

    def with_pillow():
        image = tf.py_function(_decode_with_pillow, [contents], tf.uint8)
        return tf.ensure_shape(image, [None, None, 3])

    if python:
        not_jpeg = lambda: tf.cond(palette_bmp, with_pillow, other)  # noqa: E731
    else:
        not_jpeg = other
    image = tf.cond(tf.equal(code, JPEG), jpeg, not_jpeg)
    return to_channels(tf.ensure_shape(image, [None, None, 3]), channels)


def decode_jpeg_window(contents, window, channels=3):
    """Decode only the window `(y, x, height, width)` of a JPEG, with the accurate IDCT.

    Check the bytes first (`checked`, or `image_size` for the window's bounds): only the window is
    allocated, but the decoder still reads every row above its bottom edge.

    Args:
        contents: scalar tf.string, a JPEG.
        window: int32 `(4,)`, `(y, x, crop_height, crop_width)` inside the image.
        channels: 3 (RGB) or 1 (grayscale: the luma of the RGB window, as `decode_image`). Defaults to 3.

    Returns:
        uint8 tensor `(crop_height, crop_width, channels)`.
    """
    window_pixels = tf.io.decode_and_crop_jpeg(contents, window, channels=3, dct_method=JPEG_DCT_METHOD)
    return to_channels(window_pixels, check_channels(channels))


def _decode_with_pillow(contents):
    from PIL import Image

    with Image.open(io.BytesIO(contents.numpy())) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
