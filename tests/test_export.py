"""Tests for byol_keras/export.py and the export command (byol_keras/cli/export.py): export, then serve, and compare with Keras.

Every served output is checked against the in-memory reference
`encoder(normalize(center_crop_resize(decoded pixels)), training=False)`, on pixels decoded independently of
the served graph: the original array for lossless formats, Pillow's decode for JPEG (libjpeg's accurate IDCT,
what training reads too; TensorFlow's default fast IDCT would miss by about a level per pixel).
"""

import base64
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras.preprocessing import IMAGENET_MEAN
from byol_keras.preprocessing import IMAGENET_STD
from byol_keras.preprocessing import center_crop_resize
from byol_keras.preprocessing import normalize
from byol_keras.export import export_encoder
from byol_keras.export import export_version
from byol_keras.export import l2_normalize
from byol_keras.export import next_version
from byol_keras.export import preprocess_image_bytes
from byol_keras.cli import export as export_cli
from byol_keras.decoding import DEFAULT_MAX_PIXELS
from helpers import png_bomb

REPO = pathlib.Path(__file__).resolve().parents[1]
IMAGE_SIZE = 16
EMBEDDING_DIM = 5
PROJECTION_DIM = 3
CIFAR10_TEST = pathlib.Path("/work/shared/data/cifar10/test")
TOL = 1e-4


# ---------------------------------------------------------------------------------------------------
# Helpers


def _tiny_encoder(name="tiny_encoder"):
    """Conv → BN → ReLU → GAP → Dense, with BN moving statistics far from (0, 1).

    Non-trivial moving statistics make inference-mode BatchNorm differ from batch statistics, so a
    served graph that ran BN in training mode would fail the comparisons.
    """
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(6, 3, strides=2, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(EMBEDDING_DIM, name="dense")(x)
    encoder = keras.Model(inputs, outputs, name=name)
    bn = encoder.get_layer("bn")
    rng = np.random.default_rng(7)
    bn.moving_mean.assign(rng.normal(size=6).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.2, 3.0, size=6).astype("float32"))
    return encoder


class _TinyBYOL(keras.Model):
    """Stands in for byol_keras.byol.BYOL: only `.encoder` and `.projector` matter to the export."""

    def __init__(self):
        super().__init__()
        self.encoder = _tiny_encoder()
        self.projector = keras.Sequential(
            [
                keras.Input((EMBEDDING_DIM,)),
                keras.layers.Dense(8),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.Dense(PROJECTION_DIM),
            ],
            name="projector",
        )
        bn = self.projector.layers[1]
        bn.moving_mean.assign(np.linspace(-1, 1, 8).astype("float32"))
        bn.moving_variance.assign(np.linspace(0.5, 2, 8).astype("float32"))

    def call(self, images, training=False):
        return self.encoder(images, training=training)


def _encode(array, fmt, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _pillow_rgb(encoded):
    with Image.open(io.BytesIO(encoded)) as image:
        return np.asarray(image.convert("RGB"))


def _random_image(seed, height, width, channels=3):
    # Smooth gradients plus noise: realistic enough for JPEG, still varied enough to move embeddings.
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (yy[..., None] * rng.uniform(2, 8, channels) + xx[..., None] * rng.uniform(2, 8, channels)) % 256
    noisy = base + rng.normal(0, 20, (height, width, channels))
    array = np.clip(noisy, 0, 255).astype(np.uint8)
    return array[..., 0] if channels == 1 else array


def _reference(encoder, pixels, projector=None, crop_fraction=None):
    """The in-memory answer: each decoded image through the evaluation transform and the encoder."""
    rows = []
    for image in pixels:
        x = normalize(center_crop_resize(np.asarray(image)[None], IMAGE_SIZE, crop_fraction))
        out = encoder(x, training=False)
        if projector is not None:
            out = projector(out, training=False)
        rows.append(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))[0])
    return np.stack(rows)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _gif_two_frames():
    """A two-frame palette GIF; returns (bytes, first frame as RGB uint8)."""
    palette = np.array([[255, 0, 0], [0, 128, 255], [20, 200, 40], [250, 250, 250]], np.uint8)
    indices = (np.add.outer(np.arange(14), np.arange(19)) // 4 % 4).astype(np.uint8)
    frames = []
    for frame_indices in (indices, 3 - indices):
        frame = Image.fromarray(frame_indices, mode="P")
        frame.putpalette(palette.flatten().tolist())
        frames.append(frame)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue(), palette[indices]


def _sample_images():
    """(encoded bytes, pixels the server will see) for every supported format and colour mode."""
    rgb_small = _random_image(1, 9, 13)  # smaller than IMAGE_SIZE: upsampled
    rgb_tall = _random_image(2, 40, 24)
    gray = _random_image(3, 21, 18, channels=1)
    rgba = np.concatenate([_random_image(4, 17, 30), _random_image(5, 17, 30, channels=1)[..., None]], -1)
    jpeg_source = _random_image(6, 33, 27)
    bmp = _random_image(7, 16, 16)
    jpeg = _encode(jpeg_source, "JPEG", quality=90)
    gif, gif_first_frame = _gif_two_frames()
    return [
        ("png_rgb_small", _encode(rgb_small, "PNG"), rgb_small),
        ("png_rgb_tall", _encode(rgb_tall, "PNG"), rgb_tall),
        # Grayscale is replicated to three channels, alpha is dropped (not composited).
        ("png_gray", _encode(gray, "PNG"), np.repeat(gray[..., None], 3, -1)),
        ("png_rgba", _encode(rgba, "PNG"), rgba[..., :3]),
        # JPEG is lossy: the reference is Pillow's decode of the same bytes, an independent decoder.
        ("jpeg", jpeg, _pillow_rgb(jpeg)),
        ("bmp", _encode(bmp, "BMP"), bmp),
        ("gif_first_frame", gif, gif_first_frame),
    ]


# ---------------------------------------------------------------------------------------------------
# Fixtures: one export shared by the module (exporting takes seconds)


@pytest.fixture(scope="module")
def byol_model():
    keras.utils.set_random_seed(99)
    model = _TinyBYOL()
    model(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), "float32"))
    return model


@pytest.fixture(scope="module")
def export_dir(byol_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "tiny" / "1"
    export_encoder(byol_model, path, image_size=IMAGE_SIZE)
    return path


@pytest.fixture(scope="module")
def served(export_dir):
    return tf.saved_model.load(str(export_dir))


@pytest.fixture(scope="module")
def samples():
    return _sample_images()


# A limit low enough for small test images to cross it: 4 frames of 20 x 30 (2,400 pixels) do, one does not.
SMALL_LIMIT = 2_000


@pytest.fixture(scope="module")
def small_limit_served(byol_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export_small_limit") / "1"
    description = export_encoder(byol_model, path, image_size=IMAGE_SIZE, include_projector=False, max_pixels=SMALL_LIMIT)
    return tf.saved_model.load(str(path)), description


# ---------------------------------------------------------------------------------------------------
# Pure functions


def test_the_signatures_l2_normalize_is_the_librarys_golden():
    # The served `*_normalized` outputs are the loss's normalisation (byol_keras.losses), the same on a tiny
    # vector as on any other: a norm of 5e-8 is still divided out (an epsilon on the squared norm would not).
    from byol_keras import losses

    assert l2_normalize is losses.l2_normalize
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-2.0, 0.0], [3e-8, 4e-8]], "float32")
    out = keras.ops.convert_to_numpy(l2_normalize(x))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0], [0.6, 0.8]], rtol=1e-6, atol=1e-7)


def test_preprocess_constant_images_golden():
    # A constant image stays constant through the bicubic resize and crop, so every output pixel is
    # (c / 255 - mean) / std, computed here by hand for (200, 100, 50) and for gray 77.
    rgb = np.full((23, 37, 3), (200, 100, 50), np.uint8)
    gray = np.full((31, 12), 77, np.uint8)
    rgba = np.concatenate([rgb, np.zeros((23, 37, 1), np.uint8)], -1)  # fully transparent
    batch = tf.constant([_encode(rgb, "PNG"), _encode(gray, "PNG"), _encode(rgba, "PNG")])
    out = preprocess_image_bytes(batch, IMAGE_SIZE).numpy()
    assert out.shape == (3, IMAGE_SIZE, IMAGE_SIZE, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], np.broadcast_to([1.3070468, -0.2850140, -0.9329847], out[0].shape), atol=1e-4)
    np.testing.assert_allclose(out[1], np.broadcast_to([-0.7992979, -0.6876751, -0.4623965], out[1].shape), atol=1e-4)
    # Alpha is ignored, not composited against black.
    np.testing.assert_allclose(out[2], out[0], atol=1e-6)
    # And the constants are the ones preprocessing.py uses.
    np.testing.assert_allclose((np.array([200, 100, 50]) / 255 - IMAGENET_MEAN) / IMAGENET_STD, out[0, 0, 0], atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# Serving in this process


def test_serving_default_matches_in_memory_encoder(byol_model, served, samples):
    names, encoded, pixels = zip(*samples)
    out = served.signatures["serving_default"](image_bytes=tf.constant(list(encoded)))
    expected = _reference(byol_model.encoder, pixels)
    assert out["embedding"].dtype == tf.float32
    assert out["embedding"].shape == (len(samples), EMBEDDING_DIM)
    for i, name in enumerate(names):
        np.testing.assert_allclose(out["embedding"][i], expected[i], atol=TOL, err_msg=name)
    np.testing.assert_allclose(out["embedding_normalized"], _unit(expected), atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(out["embedding_normalized"], axis=-1), 1.0, atol=1e-5)
    # Images differ, so must their embeddings (guards against a graph that ignores its input).
    assert np.min(np.abs(np.diff(out["embedding"].numpy(), axis=0)).sum(-1)) > 1e-3


def test_batch_of_one_equals_row_of_batch(served, samples):
    # Inference-mode BatchNorm: an image's embedding must not depend on the rest of its request.
    batch = served.signatures["serving_default"](image_bytes=tf.constant([s[1] for s in samples]))["embedding"]
    for i, (name, encoded, _) in enumerate(samples):
        single = served.signatures["serving_default"](image_bytes=tf.constant([encoded]))["embedding"]
        assert single.shape == (1, EMBEDDING_DIM)
        np.testing.assert_allclose(single[0], batch[i], atol=1e-5, err_msg=name)


def test_gif_serves_its_first_frame(served, samples):
    gif = dict((s[0], s) for s in samples)["gif_first_frame"]
    first_frame_png = _encode(gif[2], "PNG")
    out = served.signatures["serving_default"](image_bytes=tf.constant([gif[1], first_frame_png]))["embedding"]
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)


def test_embed_pixels_matches_in_memory_encoder(byol_model, served):
    # 70 images: three chunks of SERVING_CHUNK (32, 32, 6) joined in order.
    for shape in ((3, 20, 28, 3), (2, 41, 17, 3), (1, IMAGE_SIZE, IMAGE_SIZE, 3), (70, 5, 7, 3)):
        images = np.stack([_random_image(10 + i, *shape[1:3]) for i in range(shape[0])])
        out = served.signatures["embed_pixels"](images=tf.constant(images))
        expected = _reference(byol_model.encoder, images)
        np.testing.assert_allclose(out["embedding"], expected, atol=TOL, err_msg=str(shape))
        np.testing.assert_allclose(out["embedding_normalized"], _unit(expected), atol=TOL)


def test_embed_pixels_agrees_with_serving_default_on_png(served, samples):
    png = dict((s[0], s) for s in samples)["png_rgb_tall"]
    from_bytes = served.signatures["serving_default"](image_bytes=tf.constant([png[1]]))["embedding"]
    from_pixels = served.signatures["embed_pixels"](images=tf.constant(png[2][None]))["embedding"]
    np.testing.assert_allclose(from_bytes, from_pixels, atol=1e-6)


def test_project_signature_matches_projector(byol_model, served, samples):
    names, encoded, pixels = zip(*samples)
    out = served.signatures["project"](image_bytes=tf.constant(list(encoded)))
    expected = _reference(byol_model.encoder, pixels, projector=byol_model.projector)
    assert out["projection"].shape == (len(samples), PROJECTION_DIM)
    np.testing.assert_allclose(out["projection"], expected, atol=TOL)
    np.testing.assert_allclose(out["projection_normalized"], _unit(expected), atol=TOL)


@pytest.mark.parametrize(
    "bad, message",
    [
        (b"definitely not an image", "Unknown image file format"),
        (b"", "Input is empty"),
        (_encode(_random_image(0, 12, 12), "PNG")[:40], "Invalid PNG"),
        (_encode(_random_image(0, 12, 12), "JPEG")[:60], "Invalid JPEG data"),
    ],
    ids=["garbage", "empty", "truncated_png", "truncated_jpeg"],
)
def test_malformed_bytes_raise_then_next_request_is_served(served, samples, bad, message):
    good = samples[0][1]
    before = served.signatures["serving_default"](image_bytes=tf.constant([good]))["embedding"]
    # Alone, and hidden among valid images: the whole request fails with the decoder's reason.
    for request in ([bad], [good, bad, good]):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            served.signatures["serving_default"](image_bytes=tf.constant(request))
    after = served.signatures["serving_default"](image_bytes=tf.constant([good]))["embedding"]
    np.testing.assert_array_equal(after, before)


def _cmyk_jpeg():
    buffer = io.BytesIO()
    Image.fromarray(_random_image(9, 22, 26)).convert("CMYK").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _png16(array16):
    return tf.io.encode_png(tf.constant(array16, tf.uint16)).numpy()


def test_hostile_requests_give_embeddings_or_invalid_argument_and_the_server_goes_on(byol_model, served, samples):
    """Each input of issue 23 as a request of its own: an embedding (checked against an independent reference)
    or INVALID_ARGUMENT naming the image and the reason; then a good request is served unchanged."""
    good = tf.constant([samples[0][1]])
    before = served.signatures["serving_default"](image_bytes=good)["embedding"].numpy()
    serve = served.signatures["serving_default"]

    # An empty batch: an empty answer of the right width.
    out = serve(image_bytes=tf.constant([], tf.string))
    assert out["embedding"].shape == (0, EMBEDDING_DIM) and out["embedding_normalized"].shape == (0, EMBEDDING_DIM)
    # A 16-bit PNG: its high byte, as Pillow reads it.
    array16 = (np.random.default_rng(5).integers(0, 65536, (19, 23, 3))).astype(np.uint16)
    png16 = _png16(array16)
    np.testing.assert_array_equal(_pillow_rgb(png16), (array16 >> 8).astype(np.uint8))
    np.testing.assert_allclose(serve(image_bytes=tf.constant([png16]))["embedding"],
                               _reference(byol_model.encoder, [array16 >> 8]), atol=TOL)
    # A CMYK JPEG: converted to RGB as Pillow converts it.
    cmyk = _cmyk_jpeg()
    np.testing.assert_allclose(serve(image_bytes=tf.constant([cmyk]))["embedding"],
                               _reference(byol_model.encoder, [_pillow_rgb(cmyk)]), atol=TOL)
    # An animated GIF: its first frame (test_gif_serves_its_first_frame), its frames counted (below).
    gif = dict((s[0], s) for s in samples)["gif_first_frame"]
    np.testing.assert_allclose(serve(image_bytes=tf.constant([gif[1]]))["embedding"],
                               _reference(byol_model.encoder, [gif[2]]), atol=TOL)

    jpeg = _encode(_random_image(6, 40, 50), "JPEG", quality=90)
    palette_bmp = _encode(np.asarray(Image.fromarray(_random_image(7, 12, 12)).convert("P")), "BMP")
    webp = _encode(_random_image(7, 12, 12), "WEBP")
    refused = [
        # A truncated JPEG (its header whole): the decoder's own error, which cannot name the image.
        (jpeg[: len(jpeg) // 2], r"Invalid JPEG data"),
        (palette_bmp, r"image_bytes\[1\]: palette BMPs .* are not accepted"),
        (webp, r"image_bytes\[1\]: Unknown image file format. One of JPEG, PNG, GIF, BMP required."),
        (png_bomb(20_000, 20_000), r"image_bytes\[1\]: PNG of 20000x20000 = 400000000 pixels is above the limit "
                                   r"of 89478485 pixels \(max_pixels\); refused before decoding."),
    ]
    for bad, message in refused:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            serve(image_bytes=tf.constant([samples[0][1], bad, samples[1][1]]))
    np.testing.assert_array_equal(serve(image_bytes=good)["embedding"].numpy(), before)


def test_a_request_of_1000_tiny_images_is_served_in_chunks(byol_model, served):
    """1,000 one-pixel PNGs (67 bytes each): every embedding right, across the chunk boundaries (32 images)."""
    colours = np.random.default_rng(6).integers(0, 256, (1000, 1, 1, 3), dtype=np.uint8)
    encoded = [_encode(c, "PNG") for c in colours]
    out = served.signatures["serving_default"](image_bytes=tf.constant(encoded))["embedding"].numpy()
    assert out.shape == (1000, EMBEDDING_DIM)
    picked = [0, 31, 32, 63, 500, 991, 992, 999]
    np.testing.assert_allclose(out[picked], _reference(byol_model.encoder, colours[picked]), atol=TOL)
    # A single-colour image embeds as the same colour in any position of any request.
    np.testing.assert_allclose(out[7], served.signatures["serving_default"](image_bytes=tf.constant([encoded[7]]))["embedding"][0], atol=1e-6)


def test_the_limit_is_settable_at_export_and_recorded(small_limit_served, samples):
    served, description = small_limit_served
    assert description["max_pixels"] == SMALL_LIMIT
    assert json.loads((pathlib.Path(description["export_dir"]) / "assets.extra" / "export.json").read_text())[
        "max_pixels"] == SMALL_LIMIT
    serve = served.signatures["serving_default"]
    rng = np.random.default_rng(2)
    frames = [Image.fromarray(rng.integers(0, 4, (20, 30), dtype=np.uint8) * 60, mode="L").convert("P") for _ in range(4)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    single = _encode(np.asarray(frames[0].convert("RGB")), "PNG")
    assert serve(image_bytes=tf.constant([single]))["embedding"].shape == (1, EMBEDDING_DIM)  # 600 pixels
    # Four frames of 600 pixels: 2,400 decoded, above 2,000, though the first frame alone is not.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\]: GIF of 20x30 = 2400 pixels \(all frames\) is above the limit of 2000"):
        serve(image_bytes=tf.constant([buffer.getvalue()]))
    big = _encode(_random_image(3, 41, 50), "PNG")  # 2,050 pixels
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"PNG of 41x50 = 2050 pixels is above the limit of 2000"):
        serve(image_bytes=tf.constant([big]))


# One TensorFlow-only server process (no byol_keras: TF Serving's position) for both tests of such a process: a
# client's request of two files, then issue 23's bomb. argv[1] is the export; the files are in the working folder.
_SERVER_SCRIPT = """
import json, resource, sys, time
import numpy as np
import tensorflow as tf

served = tf.saved_model.load(sys.argv[1])
serve = served.signatures["serving_default"]
images = [open(name, "rb").read() for name in ("image.jpg", "image.png")]
out = serve(image_bytes=tf.constant(images))
np.savez("out.npz", **{k: v.numpy() for k, v in out.items()})
print("byol_keras imported:", any(m.startswith("byol_keras") for m in sys.modules))

good = tf.constant([open("good.png", "rb").read()])
bomb = tf.constant([open("bomb.png", "rb").read()])
before = serve(image_bytes=good)["embedding"].numpy()  # warm: every op of the graph has run once
serve(image_bytes=good)
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    serve(image_bytes=bomb)
    error = None
except tf.errors.InvalidArgumentError as exc:
    error = exc.message
seconds = time.perf_counter() - started
rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
after = serve(image_bytes=good)["embedding"].numpy()
print("RESULT " + json.dumps({"seconds": seconds, "peak_kib_increase": rss_after - rss_before, "error": error,
                              "same": bool(np.array_equal(before, after)), "byol_keras": "byol_keras" in sys.modules}))
"""


@pytest.fixture(scope="module")
def tensorflow_only_server(export_dir, samples, tmp_path_factory):
    """`(folder, stdout)` of `_SERVER_SCRIPT` run once for the module (a TensorFlow start-up costs seconds), from a
    folder outside the clone and without PYTHONPATH: byol_keras is not even importable there."""
    folder = tmp_path_factory.mktemp("tensorflow_only")
    by_name = {s[0]: s for s in samples}
    (folder / "image.jpg").write_bytes(by_name["jpeg"][1])
    (folder / "image.png").write_bytes(by_name["png_rgb_tall"][1])
    (folder / "bomb.png").write_bytes(png_bomb(20_000, 20_000))
    (folder / "good.png").write_bytes(samples[1][1])
    return folder, _run([sys.executable, "-c", _SERVER_SCRIPT, str(export_dir)], cwd=folder)


@pytest.mark.slow
def test_a_decompression_bomb_is_refused_in_a_tensorflow_only_server_process(tensorflow_only_server):
    """Issue 23's bomb, as TF Serving would meet it: a 1.2 MB PNG declaring 20,000 x 20,000 pixels (1.2 GB of
    zeros once inflated; 6.4 GB and 14.5 s of allocation before this limit). Refused in well under a second,
    the process's peak memory unmoved, the next request served unchanged."""
    _, stdout = tensorflow_only_server
    result = json.loads(stdout.split("RESULT ", 1)[1])
    assert result["byol_keras"] is False
    assert "PNG of 20000x20000 = 400000000 pixels is above the limit of 89478485 pixels" in result["error"]
    assert result["seconds"] < 1.0, result
    # ru_maxrss is the peak: a decode would have raised it by 1.2 GB at least; 50 MB is noise from a request.
    assert result["peak_kib_increase"] < 50 * 1024, result
    assert result["same"]


def test_rest_request_body_feeds_the_signatures(served, samples):
    # The bodies from saved_models/README.md, built as plain JSON text the way a client sends them.
    encoded = [s[1] for s in samples[:3]]
    body = json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode("ascii")}} for b in encoded]})
    pixels = _random_image(20, 12, 15)
    pixels_body = json.dumps({"signature_name": "embed_pixels", "instances": [{"images": pixels.tolist()}]})

    def to_inputs(text):
        # What TF Serving's row ("instances") format does: one object per example, keyed by input name;
        # {"b64": ...} objects are base64-decoded to bytes; rows are stacked into the batch.
        request = json.loads(text)
        signature = served.signatures[request.get("signature_name", "serving_default")]
        (name, spec), = signature.structured_input_signature[1].items()
        rows = [instance[name] for instance in request["instances"]]
        rows = [base64.b64decode(row["b64"]) if isinstance(row, dict) else row for row in rows]
        return signature, {name: tf.constant(rows, dtype=spec.dtype)}

    signature, inputs = to_inputs(body)
    assert list(inputs) == ["image_bytes"] and inputs["image_bytes"].dtype == tf.string
    np.testing.assert_allclose(
        signature(**inputs)["embedding"],
        served.signatures["serving_default"](image_bytes=tf.constant(encoded))["embedding"],
        atol=1e-6,
    )
    signature, inputs = to_inputs(pixels_body)
    assert inputs["images"].dtype == tf.uint8 and inputs["images"].shape == (1, 12, 15, 3)
    np.testing.assert_allclose(
        signature(**inputs)["embedding"],
        served.signatures["serving_default"](image_bytes=tf.constant([_encode(pixels, "PNG")]))["embedding"],
        atol=1e-6,
    )


def test_readme_documents_the_request_bodies():
    readme = (REPO / "saved_models" / "README.md").read_text()
    for snippet in (
        '{"instances": [{"image_bytes": {"b64": ',
        '"signature_name": "embed_pixels"',
        "saved_model_cli show --dir",
        'keras.layers.TFSMLayer(',
        'call_endpoint="serving_default"',
        "--model_base_path=$PWD/saved_models/",
    ):
        assert snippet in readme, snippet


def test_tfsm_layer_gives_the_same_embeddings(byol_model, export_dir, samples):
    layer = keras.layers.TFSMLayer(str(export_dir), call_endpoint="serving_default")
    names, encoded, pixels = zip(*samples)
    out = layer(tf.constant(list(encoded)))
    np.testing.assert_allclose(out["embedding"], _reference(byol_model.encoder, pixels), atol=TOL)


def test_keras_copy_and_description(byol_model, export_dir):
    description = json.loads((export_dir / "assets.extra" / "export.json").read_text())
    assert description["embedding_dim"] == EMBEDDING_DIM
    assert description["projection_dim"] == PROJECTION_DIM
    assert description["signatures"] == ["serving_default", "embed_pixels", "project"]
    # The library's one rule for the crop fraction (no crop below 96 px), as every other function applies it.
    assert description["image_size"] == IMAGE_SIZE and description["crop_fraction"] == 1.0
    assert description["max_pixels"] == DEFAULT_MAX_PIXELS == 89_478_485
    reloaded = keras.saving.load_model(export_dir / "assets.extra" / "encoder.keras")
    x = np.random.default_rng(3).normal(size=(2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    np.testing.assert_allclose(reloaded(x), byol_model.encoder(x), atol=1e-6)


def _photo_jpegs():
    """Photo-like JPEGs as users send them: 4:2:0 and 4:4:4 chroma, progressive, grayscale, odd sizes."""
    yy, xx = np.mgrid[0:57, 0:83] / 83.0
    photo = np.stack([128 + 100 * np.sin(9 * xx + 3 * yy), 128 + 100 * np.cos(7 * yy - 2 * xx), 255 * xx * yy], -1)
    photo = np.clip(photo + np.random.default_rng(4).normal(0, 15, photo.shape), 0, 255).astype(np.uint8)
    return [
        _encode(photo, "JPEG", quality=90),
        _encode(photo, "JPEG", quality=70, subsampling=0),
        _encode(photo, "JPEG", quality=80, progressive=True),
        _encode(photo[..., 1], "JPEG", quality=85),
        _encode(_random_image(8, 31, 45), "JPEG", quality=95),
    ]


def test_serving_jpegs_equals_embed_pixels_of_pillows_decode(served):
    """No train/serve skew: a JPEG sent as bytes gives the embedding of Pillow's pixels (what training reads:
    libjpeg's accurate IDCT), to float32 rounding. TensorFlow's default decoder would miss by ~1 level a pixel."""
    encoded = _photo_jpegs()
    from_bytes = served.signatures["serving_default"](image_bytes=tf.constant(encoded))["embedding"].numpy()
    moved = []
    for i, jpeg in enumerate(encoded):
        pixels = _pillow_rgb(jpeg)
        from_pixels = served.signatures["embed_pixels"](images=tf.constant(pixels[None]))["embedding"].numpy()
        np.testing.assert_allclose(from_bytes[i], from_pixels[0], rtol=0, atol=2e-6, err_msg=str(i))
        fast = tf.io.decode_jpeg(jpeg, channels=3).numpy()
        fast_embedding = served.signatures["embed_pixels"](images=tf.constant(fast[None]))["embedding"].numpy()
        moved.append(np.abs(fast_embedding[0] - from_pixels[0]).max())
    # The tolerance above is far below what the other decoder's pixels move an embedding.
    assert max(moved) > 1e-3, moved


@pytest.mark.skipif(not CIFAR10_TEST.is_dir(), reason=f"CIFAR-10 JPEG folders not found at {CIFAR10_TEST}")
def test_real_cifar10_jpegs(byol_model, served):
    files = sorted(CIFAR10_TEST.glob("*/0000.jpg"))[:4]
    encoded = [f.read_bytes() for f in files]
    out = served.signatures["serving_default"](image_bytes=tf.constant(encoded))["embedding"]
    pixels = [_pillow_rgb(b) for b in encoded]
    assert all(p.shape == (32, 32, 3) for p in pixels)
    np.testing.assert_allclose(out, _reference(byol_model.encoder, pixels), atol=TOL)


# ---------------------------------------------------------------------------------------------------
# Fresh processes: TensorFlow only, saved_model_cli, MirroredStrategy


def _run(args, cwd, extra_env=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", **(extra_env or {}))
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.mark.slow
def test_fresh_tensorflow_only_process_serves_the_export(byol_model, samples, tensorflow_only_server):
    by_name = {s[0]: s for s in samples}
    folder, stdout = tensorflow_only_server  # a JPEG and a PNG, served by a process without byol_keras
    assert "byol_keras imported: False" in stdout
    out = np.load(folder / "out.npz")
    expected = _reference(byol_model.encoder, [by_name["jpeg"][2], by_name["png_rgb_tall"][2]])
    assert out["embedding"].dtype == np.float32
    np.testing.assert_allclose(out["embedding"], expected, atol=TOL)
    np.testing.assert_allclose(out["embedding_normalized"], _unit(expected), atol=TOL)


@pytest.mark.slow
def test_saved_model_cli_lists_the_promised_signatures(export_dir, tmp_path):
    cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
    if not cli.exists():
        pytest.skip(f"saved_model_cli not found beside {sys.executable}")
    stdout = _run([str(cli), "show", "--dir", str(export_dir), "--all"], cwd=tmp_path)
    blocks = {}
    for block in stdout.split("signature_def['")[1:]:
        name, body = block.split("']", 1)
        blocks[name] = body
    assert {"serving_default", "embed_pixels", "project"} <= set(blocks)

    def tensor(body, kind, name):
        section = body.split(f"{kind}['{name}'] tensor_info:", 1)[1]
        dtype = section.split("dtype: ", 1)[1].split()[0]
        shape = section.split("shape: ", 1)[1].split("\n")[0].strip()
        return dtype, shape

    assert tensor(blocks["serving_default"], "inputs", "image_bytes") == ("DT_STRING", "(-1)")
    assert tensor(blocks["embed_pixels"], "inputs", "images") == ("DT_UINT8", "(-1, -1, -1, 3)")
    assert tensor(blocks["project"], "inputs", "image_bytes") == ("DT_STRING", "(-1)")
    for signature in ("serving_default", "embed_pixels"):
        for output in ("embedding", "embedding_normalized"):
            assert tensor(blocks[signature], "outputs", output) == ("DT_FLOAT", f"(-1, {EMBEDDING_DIM})")
    for output in ("projection", "projection_normalized"):
        assert tensor(blocks["project"], "outputs", output) == ("DT_FLOAT", f"(-1, {PROJECTION_DIM})")


@pytest.mark.slow
def test_export_of_model_built_under_mirrored_strategy(tmp_path, samples):
    # Two logical CPU devices must be configured before TensorFlow initialises: a fresh process.
    images = [s[1] for s in samples]
    np.save(tmp_path / "images.npy", np.array(images, dtype=object), allow_pickle=True)
    script = textwrap.dedent(
        f"""
        import numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from byol_keras.preprocessing import center_crop_resize, normalize
        from byol_keras.export import decode_images, export_encoder

        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            inputs = keras.Input((None, None, 3))
            x = keras.layers.Conv2D(6, 3, strides=2)(inputs)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.GlobalAveragePooling2D()(x)
            encoder = keras.Model(inputs, keras.layers.Dense({EMBEDDING_DIM})(x))
            encoder.get_layer(index=2).moving_mean.assign(np.linspace(-1, 1, 6).astype("float32"))
            assert isinstance(encoder.weights[0].value, tf.distribute.DistributedValues)
            # Exported from inside the scope, as a training script would at the end of a run.
            export_encoder(encoder, "export", image_size={IMAGE_SIZE})
        images = list(np.load("images.npy", allow_pickle=True))
        reference = np.stack([
            encoder(normalize(center_crop_resize(image[None], {IMAGE_SIZE})), training=False)[0].numpy()
            for image in decode_images(images)
        ])
        np.save("reference.npy", reference)
        print("ok")
        """
    )
    stdout = _run([sys.executable, "-c", script], cwd=tmp_path, extra_env={"PYTHONPATH": str(REPO)})
    assert "ok" in stdout
    served = tf.saved_model.load(str(tmp_path / "export"))
    out = served.signatures["serving_default"](image_bytes=tf.constant(images))["embedding"]
    np.testing.assert_allclose(out, np.load(tmp_path / "reference.npy"), atol=TOL)
    assert "project" not in served.signatures


# ---------------------------------------------------------------------------------------------------
# Mixed precision, plain encoders, argument checks


def test_mixed_precision_encoder_serves_float32(tmp_path, samples):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        encoder = _tiny_encoder()
        assert encoder.get_layer("dense").compute_dtype == "bfloat16"
        # Exported while the policy is still active, as at the end of a mixed-precision run.
        description = export_encoder(encoder, tmp_path / "mp", image_size=IMAGE_SIZE)
        names, encoded, pixels = zip(*samples)
        raw = encoder(normalize(center_crop_resize(pixels[0][None], IMAGE_SIZE)), training=False)
        assert keras.backend.standardize_dtype(raw.dtype) == "bfloat16"
        expected = _reference(encoder, pixels)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert description["compute_dtype"] == "bfloat16"
    assert description["projection_dim"] is None and "project" not in description["signatures"]
    served = tf.saved_model.load(str(tmp_path / "mp"))
    out = served.signatures["serving_default"](image_bytes=tf.constant(list(encoded)))
    assert out["embedding"].dtype == tf.float32 and out["embedding_normalized"].dtype == tf.float32
    # Same graph, same bfloat16 arithmetic: bit-identical on the pinned TF here; allow one bfloat16 ulp
    # (2**-7 relative, embeddings are O(1)) in case graph-mode op fusion rounds differently elsewhere.
    np.testing.assert_allclose(out["embedding"], expected, rtol=0, atol=1e-2)
    np.testing.assert_allclose(np.linalg.norm(out["embedding_normalized"], axis=-1), 1.0, atol=1e-5)
    pixels_out = served.signatures["embed_pixels"](images=tf.constant(pixels[1][None]))["embedding"]
    assert pixels_out.dtype == tf.float32


def test_byol_model_without_projector_signature(byol_model, tmp_path):
    description = export_encoder(byol_model, tmp_path / "no_proj", image_size=IMAGE_SIZE, include_projector=False)
    assert description["signatures"] == ["serving_default", "embed_pixels"]
    assert "project" not in tf.saved_model.load(str(tmp_path / "no_proj")).signatures


def test_explicit_keras_path(byol_model, tmp_path):
    # Built here rather than exported again: only the .keras placement differs from the default path.
    encoder = _tiny_encoder()
    description = export_encoder(encoder, tmp_path / "sm", image_size=IMAGE_SIZE, keras_path=tmp_path / "enc.keras")
    assert description["keras_path"] == str(tmp_path / "enc.keras")
    assert (tmp_path / "enc.keras").is_file()
    assert not (tmp_path / "sm" / "assets.extra" / "encoder.keras").exists()


class _NotAModel:
    encoder = None
    projector = None


def test_argument_errors(byol_model, tmp_path):
    with pytest.raises(TypeError, match=r"Received: model_or_encoder='not a model' of type str"):
        export_encoder("not a model", tmp_path / "a", IMAGE_SIZE)
    with pytest.raises(TypeError, match="of type _NotAModel"):
        export_encoder(_NotAModel(), tmp_path / "a", IMAGE_SIZE)
    with pytest.raises(TypeError, match=r"`model_or_encoder.encoder` must be a keras.Model"):
        export_encoder(type("Broken", (keras.Model,), {"encoder": "oops"})(), tmp_path / "a", IMAGE_SIZE)
    with pytest.raises(ValueError, match=r"must be built.*built=False"):
        export_encoder(keras.Sequential([keras.layers.Dense(3)]), tmp_path / "a", IMAGE_SIZE)
    with pytest.raises(ValueError, match=r"Received: image_size=0"):
        export_encoder(byol_model, tmp_path / "a", 0)
    with pytest.raises(ValueError, match=r"Received: crop_fraction=1.5"):
        export_encoder(byol_model, tmp_path / "a", IMAGE_SIZE, crop_fraction=1.5)
    fixed = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(ValueError, match=r"fixed input size \(32, 32\).*Received: image_size=16"):
        export_encoder(fixed, tmp_path / "a", IMAGE_SIZE)
    not_pooled = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match=r"must return \(batch, dim\) features"):
        export_encoder(not_pooled, tmp_path / "a", IMAGE_SIZE)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        export_encoder(byol_model, tmp_path / "taken", IMAGE_SIZE)
    assert not (tmp_path / "a").exists()  # Nothing is written when the arguments are wrong.


# ---------------------------------------------------------------------------------------------------
# Versioned layout and the training.export entry point


def test_next_version_numbers_above_the_highest(tmp_path):
    assert next_version(tmp_path / "missing") == 1
    for name in ("1", "3", "notes", ".staging-4-abc"):
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file, not a version")
    assert next_version(tmp_path) == 4
    with pytest.raises(ValueError, match=r"Received: version=0"):
        export_version(None, tmp_path, IMAGE_SIZE, version=0)
    with pytest.raises(FileExistsError, match="Version 3 already exists"):
        export_version(None, tmp_path, IMAGE_SIZE, version=3)


def test_training_export_cli_end_to_end(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "runs" / "tiny_run"
    run_dir.mkdir(parents=True)
    # The crop fraction a run recorded (its kNN monitor's) is the export's; without one, default_crop_fraction.
    (run_dir / "config.json").write_text(json.dumps({"image_size": IMAGE_SIZE, "epochs": 1, "crop_fraction": 0.875}))
    encoder = _tiny_encoder()
    encoder.save(run_dir / "model.keras")
    monkeypatch.chdir(tmp_path)

    first = export_cli.main([str(run_dir)])  # --out defaults to saved_models/<run name>
    assert first["version"] == 1 and first["crop_fraction"] == 0.875
    assert first["export_dir"] == os.path.join("saved_models", "tiny_run", "1")
    log = capsys.readouterr().out
    assert "Wrote SavedModel version 1 to saved_models/tiny_run/1" in log
    assert "signatures: serving_default, embed_pixels" in log

    out = tmp_path / "served_models" / "tiny"
    assert export_cli.main([str(run_dir), "--out", str(out), "--version", "5"])["version"] == 5
    assert export_cli.main([str(run_dir), "--out", str(out)])["version"] == 6
    assert export_cli.main([str(run_dir), "--out", str(out), "--max-pixels", "5000"])["max_pixels"] == 5000
    shutil.rmtree(out / "7")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main([str(run_dir), "--out", str(out), "--version", "5"])
    assert exit_info.value.code == 2
    assert re.search("error: Version 5 already exists.*refusing to overwrite", capsys.readouterr().err)
    assert sorted(os.listdir(out)) == ["5", "6"]  # no staging folder left behind

    served = tf.saved_model.load(str(out / "6"))
    pixels = _random_image(30, 25, 19)
    got = served.signatures["serving_default"](image_bytes=tf.constant([_encode(pixels, "PNG")]))["embedding"]
    np.testing.assert_allclose(got, _reference(encoder, [pixels], crop_fraction=0.875), atol=TOL)  # the run's
    assert json.loads((out / "6" / "assets.extra" / "export.json").read_text())["version"] == 6

    (tmp_path / "empty_run").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main([str(tmp_path / "empty_run")])
    assert exit_info.value.code == 2 and "no config.json" in capsys.readouterr().err


def test_real_byol_model_exports(tmp_path):
    from byol_keras.byol import BYOL

    keras.utils.set_random_seed(5)
    model = BYOL(_tiny_encoder(), projection_dim=4, projection_hidden_dim=8, prediction_hidden_dim=8)
    model(np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), "float32"))
    export_encoder(model, tmp_path / "byol", image_size=IMAGE_SIZE)
    served = tf.saved_model.load(str(tmp_path / "byol"))
    pixels = _random_image(40, 20, 22)
    request = tf.constant([_encode(pixels, "PNG")])
    np.testing.assert_allclose(
        served.signatures["serving_default"](image_bytes=request)["embedding"],
        _reference(model.encoder, [pixels]),
        atol=TOL,
    )
    np.testing.assert_allclose(
        served.signatures["project"](image_bytes=request)["projection"],
        _reference(model.encoder, [pixels], projector=model.projector),
        atol=TOL,
    )


def test_a_grayscale_encoder_exports_taking_grayscale_bytes_and_pixels(tmp_path):
    """One-channel images end to end (issue 32): the export of an encoder of (None, h, w, 1) images serves
    grayscale PNGs (their own pixels), colour JPEGs (their luma) and uint8 pixels of one channel."""
    from byol_keras.encoders import convnet

    encoder = convnet((4, 8), input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1))
    description = export_encoder(encoder, tmp_path / "gray", image_size=IMAGE_SIZE)
    assert description["channels"] == 1
    served = tf.saved_model.load(str(tmp_path / "gray"))
    gray = _random_image(0, 20, 24, channels=1)
    colour = _random_image(1, 18, 18)
    png, jpeg = _encode(gray, "PNG"), _encode(colour, "JPEG", quality=95)
    luma = np.asarray(tf.image.rgb_to_grayscale(_pillow_rgb(jpeg)))
    expected = np.concatenate([_reference(encoder, [gray[..., None]]), _reference(encoder, [luma])])
    got = served.signatures["serving_default"](image_bytes=tf.constant([png, jpeg]))["embedding"]
    np.testing.assert_allclose(got, expected, atol=TOL)
    pixels = served.signatures["embed_pixels"](images=tf.constant(gray[None, ..., None]))["embedding"]
    np.testing.assert_allclose(pixels, expected[:1], atol=TOL)
    with pytest.raises(ValueError, match=r"grayscale images \(batch, height, width, 1\).*\(None, 16, 16, 4\)"):
        export_encoder(convnet((4,), input_shape=(IMAGE_SIZE, IMAGE_SIZE, 4)), tmp_path / "bands", image_size=IMAGE_SIZE)
