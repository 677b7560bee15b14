"""Values that several test modules share (tests import this module, never each other)."""

import json
import math
import os
import socket
import struct
import subprocess
import sys
import types
import zlib

import keras
import numpy as np
import tensorflow as tf

import distributed_worker  # tests/ is on sys.path under pytest


# Every stage of a BYOLView off and the crop an exact identity map: the view is then only the resize and
# the normalisation.
ALL_OFF = dict(
    crop_area=(1.0, 1.0),
    crop_aspect_ratio=(1.0, 1.0),
    flip_prob=0.0,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
)


# --- shared by test_distribute.py and test_fault_tolerance.py -------------------------------------------


WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_worker.py")
ROOT = os.path.dirname(os.path.dirname(WORKER))
# A subprocess that has not finished by then is killed and the test fails: nothing may hang CI.
TIMEOUT = 420


# ------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------


def fake_strategy(replicas=1, task_type=None, task_id=None, cluster=None):
    """An object with what the functions read from a strategy: replicas and a real cluster resolver."""
    resolver = None
    if task_type is not None:
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
        )
    return types.SimpleNamespace(num_replicas_in_sync=replicas, cluster_resolver=resolver)


def worker_args(**overrides):
    args = dict(epochs=2, steps_per_epoch=3, global_batch=8, size=8, width=4, seed=3, encoder="small")
    args.update(overrides)
    return types.SimpleNamespace(**args)


def small_byol(args):
    model, optimizer = distributed_worker.build_model(args, synchronized=False)
    model.compile(optimizer=optimizer, jit_compile=False)
    return model


def numpy_weights(variables):
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]


def run_worker(command, *args, env=None, timeout=TIMEOUT):
    """Run the worker to completion; return (returncode, output, parsed RESULT or None)."""
    proc = subprocess.run(
        [sys.executable, WORKER, command, *map(str, args)],
        cwd=ROOT, env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr, parse_result(proc.stdout)


def parse_result(stdout):
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return None


def read_steps(run_dir):
    with open(os.path.join(run_dir, "steps.jsonl")) as f:
        return [json.loads(line) for line in f]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def official_crop_sizes(rng, n, height, width, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(h, w) in pixels of `n` crops drawn as the official `_decode_and_random_crop` (NumPy; np.round is
    half-to-even, as tf.round): area uniform, aspect log-uniform, rounded, clipped to the image."""
    target = rng.uniform(*area, n) * height * width
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), n))
    return np.stack([np.minimum(np.round(np.sqrt(target / aspect)), height),
                     np.minimum(np.round(np.sqrt(target * aspect)), width)], axis=1)


# --- Crop windows: NumPy re-implementations of the two sources, driven by given uniform draws ----------


def torchvision_window_reference(uniforms, height, width, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's `RandomResizedCrop.get_params`, line by line in Python, with its random draws replaced
    by `uniforms = (area (n, 10), aspect (n, 10), y (n,), x (n,))` in [0, 1): `uniform_(a, b)` is
    `a + u * (b - a)` and `randint(0, m)` is `floor(u * m)`. Computed in float32 as TensorFlow does.
    Returns `(n, 4)` int `(y1, x1, h, w)`."""
    f32 = np.float32
    u_area, u_aspect, u_y, u_x = (np.asarray(u, f32) for u in uniforms)
    log_ratio = (f32(math.log(ratio[0])), f32(math.log(ratio[1])))
    windows = []
    for n in range(len(u_y)):
        for attempt in range(u_area.shape[1]):
            target_area = f32(height * width) * (f32(area[0]) + u_area[n, attempt] * f32(area[1] - area[0]))
            aspect_ratio = np.exp(log_ratio[0] + u_aspect[n, attempt] * (log_ratio[1] - log_ratio[0]))
            w = int(np.round(np.sqrt(target_area * aspect_ratio)))
            h = int(np.round(np.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                windows.append((int(u_y[n] * f32(height - h + 1)), int(u_x[n] * f32(width - w + 1)), h, w))
                break
        else:  # torchvision's fallback: the centred whole image, its aspect ratio clamped
            in_ratio = width / height
            if in_ratio < min(ratio):
                w, h = width, int(round(width / min(ratio)))
            elif in_ratio > max(ratio):
                h, w = height, int(round(height * max(ratio)))
            else:
                w, h = width, height
            windows.append(((height - h) // 2, (width - w) // 2, h, w))
    return np.array(windows)


def official_window_reference(uniforms, height, width, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """The official `_decode_and_random_crop` window (deepmind-research byol/utils/dataset.py) from
    `uniforms = (area, aspect, y, x)`, each `(n,)` in [0, 1): area uniform, aspect log-uniform, width and
    height rounded (half to even, as tf.round) and clipped to the image, offsets uniform over the free room.
    Computed in float32 as TensorFlow does. Returns `(n, 4)` int `(y1, x1, h, w)`."""
    f32 = np.float32
    u_area, u_aspect, u_y, u_x = (np.asarray(u, f32) for u in uniforms)
    target = (f32(area[0]) + u_area * f32(area[1] - area[0])) * f32(height * width)
    low, high = f32(math.log(ratio[0])), f32(math.log(ratio[1]))
    aspect = np.exp(low + u_aspect * (high - low))
    w = np.clip(np.round(np.sqrt(target * aspect)), 1, width)
    h = np.clip(np.round(np.sqrt(target / aspect)), 1, height)
    return np.stack([np.floor(u_y * (height - h + 1)), np.floor(u_x * (width - w + 1)), h, w], axis=1).astype(int)



# A PNG that declares a huge image over a zlib stream of zeros (test_decoding, test_export, test_sources, test_data).
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


# --- image folders: test_sources.py, test_data.py, test_eval_data.py, test_subsets.py ------------------------


def flip_views(images):
    """A trivial, deterministic `views`: the batch and its mirror image, as float32."""
    images = tf.cast(images, tf.float32)
    return images, images[:, :, ::-1]


def pattern(height, width, offset=0):
    """A uint8 RGB image whose pixels are all different enough to tell images apart."""
    y, x = np.mgrid[:height, :width]
    return np.stack([(x * 7 + offset) % 256, (y * 11 + offset) % 256, (x + y + offset) % 256], -1).astype(
        np.uint8
    )


def save_image(path, array, **kwargs):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def class_folder(root, per_class=(3, 2, 4), size=16):
    """`root/<c>/...png` with a nested sub-folder in class `b`; returns {path: label}."""
    expected = {}
    for label, (name, count) in enumerate(zip("abc", per_class)):
        for i in range(count):
            sub = "deep/er" if (name == "b" and i == 1) else ""
            path = os.path.join(root, name, sub, f"{i:02d}.png")
            save_image(path, pattern(size, size, offset=10 * label + i))
            expected[path] = label
    return expected


class warnings_as_errors:
    """A context in which a warning is an error: the code inside it must warn nothing."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


# --- labelled images and small encoders: test_embedding.py, test_knn.py, test_transfer.py, test_eval_data.py,
# test_evaluation.py ------------------------------------------------------------------------------------------


def colour_images(rng, per_class, size=12):
    """Class 0 red-ish, class 1 blue-ish uint8 images: separable by their mean colour."""
    labels = np.repeat([0, 1], per_class)
    base = np.where(labels[:, None] == 0, [[200, 40, 40]], [[40, 40, 200]])
    noise = rng.integers(-30, 30, size=(len(labels), size, size, 3))
    images = np.clip(base[:, None, None, :] + noise, 0, 255).astype("uint8")
    return images, labels


def small_encoder(size=12):
    """Conv, BatchNorm, ReLU, global average pooling: 4 features, with BatchNorm statistics to freeze."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs, name="small_encoder")


def pooling_encoder(size=4):
    """The mean colour of an image: an encoder whose features are known by hand."""
    return keras.Sequential([keras.Input((size, size, 3)), keras.layers.GlobalAveragePooling2D()])


def signed_images():
    """Images whose pooled features point along +(1,1,1) for class 0 and -(1,1,1) for class 1."""
    values = [1.0, 2.0, 3.0, -1.0, -2.0, -3.0]
    images = np.stack([np.full((4, 4, 3), v, "float32") for v in values])
    return images, np.array([0, 0, 0, 1, 1, 1])


# --- the command line called in this process: test_cli.py, test_run_safety.py ----------------------------------


def main_in_process(module, capsys, *args):
    """`(exit status, stderr)` of `python -m module args`, its `main` called in this process (the same parser and error
    handling as the program, without a TensorFlow start-up)."""
    import importlib

    main = importlib.import_module(module.replace("training.", "byol_keras.cli.")).main
    capsys.readouterr()
    try:
        main(list(args), prog=f"python -m {module}")
        code = 0
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def assert_clean_error(returncode, stderr, *expected):
    """Exit status 2 and one line `python -m training.X: error: ...` holding each of `expected`, no traceback."""
    assert returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    # TensorFlow's own C++ log lines may precede it; the command's error is the one line in argparse's form.
    error_lines = [line for line in stderr.splitlines() if line.startswith("python -m training.")]
    assert len(error_lines) == 1, stderr[-2000:]
    for text in expected:
        assert text in error_lines[0], (text, error_lines[0])
