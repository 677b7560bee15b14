"""A decompression bomb sent to an exported encoder, as TF Serving would meet it: the request's time and memory.

    python -m benchmarks.serving_bomb                          # the export's default limit (max_pixels)
    python -m benchmarks.serving_bomb --no-limit --cap-gb 12   # no effective limit, the child's memory capped

Exports a small encoder (conv, BatchNorm, pooling, dense) at `--image-size`, then, in a fresh process that imports
TensorFlow only (as a model server does: no Keras, no byol_keras), serves a good JPEG twice, sends the bomb (a PNG
whose header declares `--side` x `--side` RGB pixels and whose data is a zlib stream of zeros, about 1.2 MB at
20,000), and serves the good JPEG again. Prints one JSON line: the bomb request's seconds, the child's peak resident
memory (`ru_maxrss`) once the model is loaded, after the good requests (`--good-size` makes the good image
large, to measure what an image near the limit costs), before and after the bomb (and as its parent reads it, `child_peak_mib`, which stands when the
child dies), the error, and whether the next answer equals the first.

`--no-limit` exports with `max_pixels` far above the bomb's, as every export was before the limit existed;
`--cap-gb` then caps the child's address space at that much above what it has mapped once warm, so that the
decode fails (ResourceExhausted) rather than take the machine's memory (an uncapped run was OOM-killed at
11.5 GB resident on this 24 GiB machine).
"""

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib

from benchmarks import report


def png_bomb(width, height):
    """An RGB PNG of `width` x `height` black pixels whose data is a zlib stream of zeros, made in milliseconds.

    Every row is a filter byte and `3 * width` zeros. The deflate stream is one block of many rows compressed once
    and ended by a full flush (which resets the compressor, so the same rows compress to the same bytes again),
    repeated, then an empty final block and the Adler-32 of the zeros (a = 1, b = their count mod 65521). At
    20,000 x 20,000 the file is 1.17 MB and its pixels 1.2 GB.
    """
    row = 3 * width + 1
    rows_per_block = max(1, min(height, (1 << 22) // row))
    blocks, remainder = divmod(height, rows_per_block)

    def raw_deflate(length):
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(b"\0" * length) + compressor.flush(zlib.Z_FULL_FLUSH)

    body = raw_deflate(rows_per_block * row) * blocks + (raw_deflate(remainder * row) if remainder else b"")
    adler = (height * row % 65521) << 16 | 1
    stream = b"\x78\xda" + body + b"\x03\x00" + struct.pack(">I", adler)

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, not interlaced
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


# The child: TensorFlow only. argv: export dir, good.png, bomb.png, cap in GiB (0: none).
_CHILD = r"""
import json, resource, sys, time
import numpy as np
import tensorflow as tf

served = tf.saved_model.load(sys.argv[1])
serve = served.signatures["serving_default"]
good = tf.constant([open(sys.argv[2], "rb").read()])
bomb = tf.constant([open(sys.argv[3], "rb").read()])
peak_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
first = serve(image_bytes=good)["embedding"].numpy()
serve(image_bytes=good)
peak_good = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cap_gb = float(sys.argv[4])
if cap_gb:
    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
    limit = mapped + int(cap_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("SENDING", flush=True)
started = time.perf_counter()
try:
    serve(image_bytes=bomb)
    error = None
except tf.errors.OpError as exc:
    error = type(exc).__name__ + ": " + exc.message.strip().splitlines()[-2 if "[[" in exc.message else -1][:300]
seconds = time.perf_counter() - started
peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
same = bool(np.array_equal(serve(image_bytes=good)["embedding"].numpy(), first))
print("RESULT " + json.dumps({"seconds": round(seconds, 3), "peak_mib_loaded": round(peak_loaded / 1024, 1),
                              "peak_mib_after_good_requests": round(peak_good / 1024, 1),
                              "peak_mib_before": round(peak_before / 1024, 1),
                              "peak_mib_after": round(peak_after / 1024, 1), "error": error, "next_request_same": same,
                              "byol_keras_imported": "byol_keras" in sys.modules}))
"""


def run(args):
    import keras
    import numpy as np
    import tensorflow as tf

    from byol_keras.decoding import DEFAULT_MAX_PIXELS
    from byol_keras.export import export_encoder

    keras.utils.set_random_seed(0)
    inputs = keras.Input((args.image_size, args.image_size, 3))
    x = keras.layers.Conv2D(16, 3, strides=2)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    encoder = keras.Model(inputs, keras.layers.Dense(32)(x))
    max_pixels = 10**15 if args.no_limit else (args.max_pixels or DEFAULT_MAX_PIXELS)
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = os.path.join(tmp, "export")
        export_encoder(encoder, export_dir, image_size=args.image_size, include_projector=False, max_pixels=max_pixels)
        good = os.path.join(tmp, "good.png")
        rng = np.random.default_rng(0)
        with open(good, "wb") as f:
            f.write(tf.io.encode_jpeg(rng.integers(0, 256, (*args.good_size, 3), dtype=np.uint8), quality=90).numpy())
        bomb = os.path.join(tmp, "bomb.png")
        with open(bomb, "wb") as f:
            f.write(png_bomb(args.side, args.side))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        child = subprocess.Popen([sys.executable, "-c", _CHILD, export_dir, good, bomb, str(args.cap_gb)], cwd=tmp,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sent = None
        lines = []
        for line in child.stdout:
            if line.startswith("SENDING"):
                sent = time.perf_counter()
            lines.append(line)
        stderr = child.stderr.read()
        status = child.wait()
        ended = time.perf_counter()
        # The child's own peak, read by the parent: it stands even when the child died of the bomb.
        child_peak_mib = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
        results = [line for line in lines if line.startswith("RESULT ")]
        if results:
            result = json.loads(results[0][len("RESULT "):])
        elif sent is not None:
            # The server process itself died of the request (std::bad_alloc under the cap, or the OOM killer).
            last = stderr.strip().splitlines()[-2:] if stderr.strip() else []
            result = {"seconds": round(ended - sent, 3), "error": f"the serving process died (status {status}): "
                      + " | ".join(last), "next_request_same": None}
        else:
            raise SystemExit(f"error: the serving process ended with status {status} before the bomb:\n{stderr[-3000:]}")
        result["child_peak_mib"] = child_peak_mib
        bomb_bytes = os.path.getsize(bomb)
    config = {"side": args.side, "bomb_bytes": bomb_bytes, "image_size": args.image_size, "max_pixels": max_pixels,
              "cap_gb": args.cap_gb, "good_size": list(args.good_size)}
    return report.emit("serving_bomb", config, [result["seconds"]], "s", **result)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=20_000, help="the bomb's declared width and height (default 20000)")
    parser.add_argument("--image-size", dest="image_size", type=int, default=224, help="the export's input side")
    parser.add_argument("--max-pixels", dest="max_pixels", type=int, default=None, help="the export's limit (default: the library's)")
    parser.add_argument("--good-size", dest="good_size", type=int, nargs=2, default=(300, 400), metavar=("H", "W"),
                        help="height and width of the good JPEG served before and after the bomb (default 300 400); "
                             "its request's peak memory is reported (peak_mib_after_good_requests)")
    parser.add_argument("--no-limit", dest="no_limit", action="store_true", help="export without an effective limit")
    parser.add_argument("--cap-gb", dest="cap_gb", type=float, default=0.0,
                        help="cap the serving process's address space this many GiB above its warm size (0: no cap)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
