"""Tests for byol_keras/decoding.py: sizes read from headers, the pixel limit before decoding, the one decoder."""

import io
import struct
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras import decoding
from helpers import png_bomb


def _encode(array, fmt, **kwargs):
    buffer = io.BytesIO()
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _photo(height, width, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width] / max(height, width)
    image = np.stack([128 + 100 * np.sin(9 * x + 3 * y), 128 + 100 * np.cos(7 * y - 2 * x), 255 * x * y], -1)
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def _size(encoded):
    code, height, width, pixels = (t.numpy() for t in tf.function(decoding.image_header)(tf.constant(encoded)))
    return decoding.FORMAT_NAMES[code], int(height), int(width), float(pixels)


def _gif(frames, screen=None, **save_kwargs):
    """A GIF of `frames` (each a uint8 (h, w) palette-index array), optionally on a larger logical screen."""
    images = []
    for indices in frames:
        frame = Image.fromarray(indices, mode="P")
        frame.putpalette(list(range(256)) * 3)
        images.append(frame)
    encoded = _encode(images[0], "GIF", save_all=True, append_images=images[1:], **save_kwargs)
    if screen is not None:  # rewrite the logical screen size (bytes 6..10, little-endian)
        encoded = encoded[:6] + struct.pack("<HH", *screen) + encoded[10:]
    return encoded


def _gif_frames_reference(data):
    """The GIF block walk, byte by byte in Python: (frames, sum of frame areas)."""
    position = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    frames = area = 0
    while position < len(data):
        if data[position] == 0x2C:
            frames += 1
            area += (data[position + 5] + 256 * data[position + 6]) * (data[position + 7] + 256 * data[position + 8])
            packed = data[position + 9]
            position += 11 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
        elif data[position] == 0x21:
            position += 2
        else:
            break
        while position < len(data) and data[position] != 0:
            position += data[position] + 1
        position += 1
    return frames, area


# ---------------------------------------------------------------------------------------------------
# Sizes from headers


def test_header_sizes_golden():
    rgb = _photo(30, 41)
    assert _size(_encode(rgb, "PNG")) == ("PNG", 30, 41, 30 * 41)
    assert _size(_encode(rgb, "JPEG")) == ("JPEG", 30, 41, 30 * 41)
    assert _size(_encode(rgb, "BMP")) == ("BMP", 30, 41, 30 * 41)
    assert _size(_encode(rgb[..., 0], "PNG")) == ("PNG", 30, 41, 30 * 41)
    # A top-down BMP stores a negative height (bytes 22..26, little-endian int32); the size is its absolute value.
    bmp = bytearray(_encode(rgb, "BMP"))
    bmp[22:26] = struct.pack("<i", -30)
    assert _size(bytes(bmp)) == ("BMP", 30, 41, 30 * 41)
    # The bomb declares 20,000 x 20,000 in 1.2 MB.
    bomb = png_bomb(20_000, 20_000)
    assert len(bomb) < 1_300_000 and _size(bomb) == ("PNG", 20_000, 20_000, 4e8)
    # A PNG header may declare sides up to 2**31 - 1: the product is beyond int32 (a float64 here).
    huge = bytearray(bomb)
    huge[16:24] = struct.pack(">II", 2**31 - 1, 2**31 - 1)
    assert _size(bytes(huge))[3] == float(2**31 - 1) ** 2
    assert _size(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ("unknown", 0, 0, 0.0)


def test_gif_counts_every_frame_and_its_own_size():
    rng = np.random.default_rng(0)
    one = _gif([rng.integers(0, 256, (20, 30), dtype=np.uint8)])
    assert _size(one) == ("GIF", 20, 30, 600)
    # Five full-screen frames: five times the screen.
    animated = _gif([rng.integers(0, 256, (20, 30), dtype=np.uint8) for _ in range(5)])
    assert _size(animated) == ("GIF", 20, 30, 3000)
    # Frames declared larger than a small logical screen count with their own size.
    small_screen = _gif([rng.integers(0, 256, (20, 30), dtype=np.uint8) for _ in range(3)], screen=(4, 4))
    assert _size(small_screen) == ("GIF", 4, 4, 1800)
    # Pillow writes a local colour table and extensions for frames with other palettes; the walk agrees with a
    # byte-by-byte reference on all of these, and on a stream of one-byte sub-blocks.
    header = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 7, 9, 0x81) + b"\0" * 12 + b"\x02" + b"\x01\x00" * 500 + b"\x00"
    crafted = header + (b"\x21\xf9\x04\x00\x00\x00\x00\x00" + frame) * 3 + b"\x3b"
    for data in (one, animated, small_screen, crafted):
        frames, area = (int(t) for t in tf.function(decoding._gif_frames)(tf.constant(data)))
        assert (frames, area) == _gif_frames_reference(data)
    assert _gif_frames_reference(crafted) == (3, 3 * 63)


# ---------------------------------------------------------------------------------------------------
# The limit, checked before decoding


def test_a_png_bomb_is_refused_fast_naming_its_size_and_the_limit():
    bomb = png_bomb(20_000, 20_000)
    decode = tf.function(lambda contents: decoding.decode_image(contents, name="bomb.png"))
    decode(tf.constant(png_bomb(3, 2)))  # traced once
    started = time.perf_counter()
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        decode(tf.constant(bomb))
    assert time.perf_counter() - started < 1.0
    assert ("bomb.png: PNG of 20000x20000 = 400000000 pixels is above the limit of 89478485 pixels (max_pixels); "
            "refused before decoding.") in error.value.message
    # The same construction at a small size is a valid PNG of black pixels: a real bomb, not a broken file.
    image = decoding.decode_image(png_bomb(301, 7)).numpy()
    assert image.shape == (7, 301, 3) and not image.any()
    with Image.open(io.BytesIO(png_bomb(301, 7))) as pillow:
        assert pillow.size == (301, 7) and not np.asarray(pillow).any()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF"])
def test_the_limit_is_inclusive_and_applies_to_every_format(fmt):
    array = _photo(20, 30)
    encoded = _encode(array if fmt != "GIF" else Image.fromarray(array).convert("P"), fmt)
    assert decoding.decode_image(encoded, max_pixels=600).shape == (20, 30, 3)
    frames = " (all frames)" if fmt == "GIF" else ""
    with pytest.raises(tf.errors.InvalidArgumentError, match=re_escape(f"{fmt} of 20x30 = 600 pixels{frames} is above the limit of 599 pixels")):
        decoding.decode_image(encoded, max_pixels=599)


def test_an_animated_gif_counts_all_its_frames_against_the_limit():
    rng = np.random.default_rng(1)
    animated = _gif([rng.integers(0, 256, (20, 30), dtype=np.uint8) for _ in range(4)])
    first = decoding.decode_image(animated, max_pixels=2400).numpy()
    with Image.open(io.BytesIO(animated)) as pillow:
        np.testing.assert_array_equal(first, np.asarray(pillow.convert("RGB")))  # the first frame
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"GIF of 20x30 = 2400 pixels \(all frames\) is above"):
        decoding.decode_image(animated, max_pixels=2399)


@pytest.mark.parametrize(
    "contents, message",
    [
        (b"", "Input is empty."),
        (b"not an image at all", "Unknown image file format. One of JPEG, PNG, GIF, BMP required."),
        # WebP and JPEG XL: TensorFlow's decode_image would decode them, but their sizes are not read here.
        (b"RIFF\x24\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00" + b"\0" * 20, "Unknown image file format"),
        (b"\xff\x0a" + b"\0" * 30, "Unknown image file format"),
    ],
    ids=["empty", "garbage", "webp", "jpeg_xl"],
)
def test_what_is_refused_names_the_image_and_the_reason(contents, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=re_escape(f"photos/x.img: {message}")):
        decoding.decode_image(contents, name="photos/x.img")


def test_palette_bmps_are_decoded_with_pillow_or_refused_without_python():
    palette = Image.fromarray(_photo(9, 11)).convert("P")
    encoded = _encode(palette, "BMP")
    np.testing.assert_array_equal(decoding.decode_image(encoded).numpy(), np.asarray(palette.convert("RGB")))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_bytes.0.: palette BMPs"):
        tf.function(lambda c: decoding.decode_image(c, python=False, name="image_bytes[0]"))(tf.constant(encoded))
    rgb = _encode(_photo(9, 11), "BMP")  # 24-bit BMPs are TensorFlow's, with or without Python
    np.testing.assert_array_equal(decoding.decode_image(rgb, python=False).numpy(), _photo(9, 11))


def test_argument_checks():
    with pytest.raises(ValueError, match=r"Received: max_pixels=0"):
        decoding.decode_image(_encode(_photo(4, 4), "PNG"), max_pixels=0)
    with pytest.raises(ValueError, match=r"Received: max_pixels=1.5"):
        decoding.decode_image(_encode(_photo(4, 4), "PNG"), max_pixels=1.5)


# ---------------------------------------------------------------------------------------------------
# One decoder: Pillow's pixels


def test_jpegs_decode_as_pillow_decodes_them_whole_and_windowed():
    """The accurate IDCT gives Pillow's pixels exactly, for every chroma subsampling, progressive or not; the
    window decoder (the per-image pipeline's) is the same decoder inside its window."""
    photo = _photo(61, 83)
    fast_differs = False
    for kwargs in (dict(quality=90), dict(quality=75, subsampling=0), dict(quality=60, progressive=True)):
        encoded = _encode(photo, "JPEG", **kwargs)
        with Image.open(io.BytesIO(encoded)) as pillow:
            expected = np.asarray(pillow.convert("RGB"))
        np.testing.assert_array_equal(decoding.decode_image(encoded).numpy(), expected, err_msg=str(kwargs))
        window = decoding.decode_jpeg_window(encoded, [10, 20, 40, 50]).numpy()
        np.testing.assert_array_equal(window[2:-2, 2:-2], expected[12:48, 22:68], err_msg=str(kwargs))
        fast_differs |= not np.array_equal(tf.io.decode_image(encoded, channels=3).numpy(), expected)
    assert fast_differs  # TensorFlow's default decoder is not Pillow's: the skew this module removes


def test_one_channel_is_the_luma_a_grayscale_file_its_own_pixels_whole_and_windowed():
    """`channels=1`: an 'L' PNG or JPEG gives its own pixels back (one channel, not three equal ones), an RGB file
    its luma (`tf.image.rgb_to_grayscale` of its RGB pixels, as the export converts); JPEG windows the same inside
    their window. `channels=3` replicates a grayscale file."""
    gray = _photo(23, 31)[..., 0]
    png, jpeg, colour = _encode(gray, "PNG"), _encode(gray, "JPEG", quality=90), _encode(_photo(23, 31), "PNG")
    with Image.open(io.BytesIO(jpeg)) as pillow:
        jpeg_pixels = np.asarray(pillow)
    assert pillow.mode == "L"
    for encoded, expected in ((png, gray), (jpeg, jpeg_pixels)):
        one = decoding.decode_image(encoded, channels=1).numpy()
        assert one.shape == (23, 31, 1)
        np.testing.assert_array_equal(one[..., 0], expected)
        np.testing.assert_array_equal(decoding.decode_image(encoded).numpy(), np.repeat(expected[..., None], 3, -1))
    window = decoding.decode_jpeg_window(jpeg, [4, 6, 12, 20], channels=1).numpy()
    assert window.shape == (12, 20, 1)
    np.testing.assert_array_equal(window[2:-2, 2:-2, 0], jpeg_pixels[6:14, 8:24])
    luma = tf.image.rgb_to_grayscale(_photo(23, 31)).numpy()
    np.testing.assert_array_equal(decoding.decode_image(colour, channels=1).numpy(), luma)
    assert not np.array_equal(luma[..., 0], _photo(23, 31)[..., 0])  # the luma, not a channel
    for bad in (2, 4, True, "1"):
        with pytest.raises(ValueError, match=rf"`channels` must be 3 \(RGB\) or 1.*Received: channels={bad!r}"):
            decoding.decode_image(png, channels=bad)


def test_module_docstring_example_runs():
    import doctest

    result = doctest.testmod(decoding, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def re_escape(text):
    import re

    return re.escape(text)


def test_file_image_header_reads_what_image_header_reads(tmp_path):
    # The folder scan's Python reader against the graph's `image_header` on the whole file: the same fields for every
    # JPEG, PNG and BMP it answers, None (the graph decides) for GIFs and for JPEGs whose markers it cannot follow,
    # and at every length a JPEG can be cut to: an answer only where libjpeg's header read agrees.
    rgb = _photo(30, 41)
    exif = Image.Exif()
    exif[0x010E] = "x" * 3000  # a 3 kB APP1 segment before the frame header
    files = {
        "baseline.jpg": _encode(rgb, "JPEG"),
        "progressive.jpg": _encode(rgb, "JPEG", progressive=True),
        "exif.jpg": _encode(rgb, "JPEG", exif=exif.tobytes()),
        "gray.jpg": _encode(rgb[..., 0], "JPEG"),
        "cmyk.jpg": _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "rgb.png": _encode(rgb, "PNG"),
        "gray16.png": _encode(rgb[..., 0].astype(np.uint16) * 257, "PNG"),
        "palette.png": _encode(Image.fromarray(rgb).convert("P"), "PNG"),
        "rgb.bmp": _encode(rgb, "BMP"),
        "bomb.png": png_bomb(20_000, 20_000),
        "short.png": _encode(rgb, "PNG")[:20],
        "empty.jpg": b"",
        "text.jpg": b"not an image",
    }
    top_down = bytearray(files["rgb.bmp"])
    top_down[22:26] = struct.pack("<i", -30)
    files["top_down.bmp"] = bytes(top_down)
    jpeg = files["exif.jpg"]
    files.update({f"cut_{n}.jpg": jpeg[:n] for n in range(0, len(jpeg), 97)})
    scan = jpeg.index(b"\xff\xda")
    header_end = scan + 2 + struct.unpack(">H", jpeg[scan + 2: scan + 4])[0]  # the start of scan's segment read
    answered = set()
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        found = decoding.file_image_header(str(path))
        try:
            expected = tuple(x.numpy().item() for x in decoding.image_header(tf.constant(data)))
        except tf.errors.InvalidArgumentError:
            expected = None  # libjpeg refuses the header
        if found is None:
            assert name.startswith("cut_") or expected is None, name
            continue
        answered.add(name)
        assert found == expected, name
    # All but the JPEGs cut inside their header (cut at 0 bytes, a file is empty: an unknown format, both say).
    assert set(files) - answered == {f"cut_{n}.jpg" for n in range(97, header_end, 97)}
    gif = tmp_path / "a.gif"
    gif.write_bytes(_gif([np.zeros((4, 4), np.uint8)]))
    assert decoding.file_image_header(str(gif)) is None
