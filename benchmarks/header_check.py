"""What reading an image's size from its header costs (`byol_keras.decoding.image_size`), against decoding it.

    python -m benchmarks.header_check --runs 5

The check runs before every decode, in training and in serving. JPEG, PNG and BMP sizes are a few bytes at
fixed places; a GIF's pixels are the sum over its frames, found by following its blocks and sub-blocks
(pointer doubling over every byte). Times, in a `tf.function` as the pipelines and the signatures run it, the
header check of: a JPEG and a PNG of `--side` x `--side` noise; a GIF of the same noise (palette), in 255-byte
sub-blocks as encoders write them; a GIF of the same length made of one-byte sub-blocks (the worst chain for a
loop per sub-block); a GIF of 80,000 empty one-pixel frames. Beside each, TensorFlow's own decode of the file.
Prints one JSON line per file: median seconds of the check and of the decode, and the file's size.
"""

import argparse
import io
import struct
import time

from benchmarks import report


def _gif_of_tiny_sub_blocks(length):
    """One 100 x 100 frame whose data is `length` bytes of one-byte sub-blocks (valid structure, junk pixels)."""
    header = b"GIF89a" + struct.pack("<HHBBB", 100, 100, 0x80, 0, 0) + b"\0" * 6
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 100, 100, 0) + b"\x02" + b"\x01\x00" * (length // 2) + b"\x00"
    return header + frame + b"\x3b"


def _gif_of_empty_frames(count):
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\0" * 6
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x01\x00\x00"
    return header + frame * count + b"\x3b"


def _median_seconds(function, contents, runs):
    function(contents)  # traced and warm
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function(contents)
        times.append(time.perf_counter() - started)
    return times


def run(args):
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from byol_keras import decoding

    report.set_threads(args.threads)
    noise = np.random.default_rng(0).integers(0, 256, (args.side, args.side, 3), dtype=np.uint8)
    files = {}
    for fmt in ("JPEG", "PNG", "GIF"):
        buffer = io.BytesIO()
        Image.fromarray(noise).convert("P" if fmt == "GIF" else "RGB").save(buffer, format=fmt)
        files[fmt] = buffer.getvalue()
    files["GIF, one-byte sub-blocks"] = _gif_of_tiny_sub_blocks(len(files["GIF"]))
    files["GIF, 80,000 empty frames"] = _gif_of_empty_frames(80_000)
    check = tf.function(lambda contents: decoding.image_size(contents)[3])
    decode = tf.function(lambda contents: tf.shape(tf.io.decode_image(contents, channels=3, expand_animations=False)))
    for name, contents in files.items():
        contents = tf.constant(contents)
        checks = _median_seconds(check, contents, args.runs)
        try:
            decodes = report.summary(_median_seconds(decode, contents, args.runs))
        except tf.errors.OpError as error:  # the crafted GIFs hold no decodable pixels
            decodes = f"not decodable: {error.message.strip().splitlines()[-1][:120]}"
        config = {"file": name, "bytes": int(tf.strings.length(contents)), "side": args.side, "threads": args.threads,
                  "pixels_counted": float(check(contents))}
        report.emit("header_check", config, checks, "s", tensorflow_decode=decodes)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=1000, help="side of the noise images (default 1000)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
