"""Images of one channel kept as one channel end to end (`--channels 1`), and the RGB default left as it was.

A grayscale folder (PNG and JPEG files of mode 'L', a few classes, two non-square sizes) goes through the command
line's own calls: `byol-pretrain --channels 1` -> the export's byte and pixel signatures -> `byol-export`,
`byol-linear-eval` and `byol-finetune` on the run, and a resume with another channel count stops with a message
naming the flag. The library's pieces (both pipeline paths, the view grid, a preset's RGB stages, an old record,
the export's check) have tests of their own, each a few seconds.
"""

import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from byol_keras import data, sources
from byol_keras.views import BYOLAugment
from byol_keras.eval_data import load_arrays
from helpers import pattern, save_image


def _digest(*arrays):
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _rgb_folder(root):
    """RGB PNGs and JPEGs of two non-square sizes in two classes (the per-image path, JPEG windows and whole PNGs)."""
    for i in range(6):
        height, width = (21, 30) if i % 2 else (27, 19)
        extension = ".jpg" if i % 3 else ".png"
        save_image(os.path.join(root, "ab"[i % 2], f"{i}{extension}"), pattern(height, width, offset=17 * i),
                   **({"quality": 90} if extension == ".jpg" else {}))
    return root


# The uint8 pixels an RGB run reads (the crops of both views on the per-image path, JPEG windows and whole PNGs; the
# images of the native-size path; the kNN arrays), hashed on the code from before `channels` existed: the RGB
# default must stay the same, bit for bit.
RGB_GOLDEN = {"per_image": "92aa17f61392add5", "native": "b55cb985ed50a72d", "arrays": "575f0f50449dc541"}


def test_the_rgb_default_reads_the_same_pixels_as_before(tmp_path):
    source = sources.load_source(_rgb_folder(str(tmp_path / "rgb")))
    augment = BYOLAugment(16, seed=3, blur=False, jit_compile=False)
    crops = next(iter(data.pretrain_dataset(source, augment, 4, seed=5, repeat=True, views_on="device")))
    digits = sources.load_source("digits", split="test", image_size=12)
    native = next(iter(data.pretrain_dataset(digits, augment, 8, seed=5, repeat=True, views_on="device")))
    arrays = load_arrays(source, 16, crop_fraction=0.875)
    got = {"per_image": _digest(*(np.asarray(t) for t in crops)), "native": _digest(*(np.asarray(t) for t in native)),
           "arrays": _digest(*arrays)}
    assert crops[0].shape == (4, 16, 16, 3) and native[0].shape == (8, 12, 12, 3) and arrays[0].shape == (6, 16, 16, 3)
    assert got == RGB_GOLDEN


# --- a grayscale folder -------------------------------------------------------------------------------------


def _gray_image(height, width, seed):
    y, x = np.mgrid[:height, :width]
    return ((x * (3 + seed % 5) + y * (7 - seed % 3) + 29 * seed) % 256).astype(np.uint8)


def _gray_folder(root, splits=(("train", 4), ("test", 2)), sizes=((22, 30), (28, 20))):
    """`root/<split>/<class>/*`: grayscale ('L') PNGs and JPEGs of non-square `sizes`, three classes. Returns root."""
    from PIL import Image

    for split, count in splits:
        for label, name in enumerate("abc"):
            for i in range(count):
                height, width = sizes[i % len(sizes)]
                path = os.path.join(root, split, name, f"{i}.{'jpg' if i % 2 else 'png'}")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                image = Image.fromarray(_gray_image(height, width, 10 * label + i))
                assert image.mode == "L"
                image.save(path, **({"quality": 90} if path.endswith(".jpg") else {}))
    return str(root)


@pytest.fixture
def step_without_xla(monkeypatch):
    """The training step without XLA (as tests/test_pretrain.py's fixture): a compilation per launch costs seconds."""
    from byol_keras import distribute

    monkeypatch.setattr(distribute, "_onednn_enabled", lambda: True)


def _first(source, augment, batch_size=6, **kwargs):
    dataset = data.pretrain_dataset(source, augment, batch_size, seed=5, repeat=True, **kwargs)
    return [np.asarray(t) for t in next(iter(dataset))]


def _augment(channels):
    return BYOLAugment(16, seed=3, blur=False, jit_compile=False, channels=channels)


@pytest.mark.parametrize("path", ["per_image", "native"])
def test_one_channel_crops_are_the_first_channel_of_the_rgb_crops_on_both_paths(tmp_path, path):
    """A grayscale folder read with `channels=1` gives, draw for draw, the first channel of what the RGB default
    gives (three equal channels): the same windows, JPEG windows and whole PNGs alike, one channel."""
    sizes = ((22, 30), (28, 20)) if path == "per_image" else ((18, 24),)
    root = _gray_folder(tmp_path / "scans", splits=(("train", 4),), sizes=sizes)
    rgb, gray = sources.load_source(root), sources.load_source(root, channels=1)
    assert gray.channels == 1 and rgb.channels == 3 and data.choose_path(gray, 16) == path
    got, reference = _first(gray, _augment(1), views_on="device"), _first(rgb, _augment(3), views_on="device")
    for one, three in zip(got[:-1], reference[:-1]):  # (crops1, crops2) or the native-size images
        assert one.shape[-1] == 1 and three.shape[-1] == 3 and one.dtype == np.uint8
        np.testing.assert_array_equal(np.repeat(one, 3, -1), three)
    np.testing.assert_array_equal(got[-1], reference[-1])  # the labels
    if path == "per_image":  # the evaluation arrays (whatever the path) too
        np.testing.assert_array_equal(np.repeat(load_arrays(gray, 16)[0], 3, -1), load_arrays(rgb, 16)[0])
    else:  # the views themselves (the per-image path's: the command line's test), the squares of `views=None`
        view1, view2, _ = _first(gray, _augment(1))
        assert view1.shape == view2.shape == (6, 16, 16, 1) and view1.dtype == np.float32
        squares, _ = _first(gray, None, image_size=16)
        assert squares.shape == (6, 16, 16, 1)
    with pytest.raises(ValueError, match=r"source's 1 channel\(s\).*Received: views with channels=3"):
        data.pretrain_dataset(gray, _augment(3), 6)


def test_one_channel_views_and_the_view_grid():
    from byol_keras.preprocessing import normalize
    from byol_keras.callbacks import ViewGrid, unnormalize

    images = np.random.default_rng(0).integers(0, 256, (4, 20, 20, 1), dtype=np.uint8)
    np.testing.assert_allclose(unnormalize(normalize(images)), images / 255.0, atol=1e-6)
    grid = ViewGrid("unused", images, _augment(1)).make_grid()
    assert grid.shape == (4 * 18, 3 * 18, 1)  # 16-px tiles with 2 px of padding
    with pytest.raises(ValueError, match=r"\(n, h, w, 1\).*images.shape=\(4, 20, 20, 2\)"):
        ViewGrid("unused", np.zeros((4, 20, 20, 2)), _augment(1))


def test_one_channel_runs_drop_the_rgb_stages_of_a_preset_and_a_resume_keeps_the_channels(tmp_path):
    from byol_keras.cli.pretrain import parse_args, resolve_config
    from byol_keras.experiment import resume_config
    from byol_keras.decoding import DEFAULT_MAX_PIXELS

    # The CIFAR preset's RGB views (saturation, hue, grayscale stage) become one-channel views, recorded as such.
    config = resolve_config(parse_args(["--preset", "cifar10-resnet18", "--channels", "1"]))
    assert config["channels"] == 1
    assert {k: config["augment"][k] for k in ("saturation", "hue", "grayscale_prob", "brightness")} == {
        "saturation": 0.0, "hue": 0.0, "grayscale_prob": 0.0, "brightness": 0.4}
    augment, _ = data.run_views(config, sources.load_source("digits", image_size=32, channels=1))
    assert augment.view1.channels == augment.view2.channels == 1
    rgb = resolve_config(parse_args(["--preset", "cifar10-resnet18"]))
    assert rgb["channels"] == 3 and rgb["augment"]["saturation"] == 0.2  # the default: the preset's own views

    # A config.json from before the field read RGB: resumed as such, and not with --channels 1.
    flags = ["--preset", "demo", "--out", str(tmp_path), "--export", "none"]
    stored = json.loads(json.dumps(dict(resolve_config(parse_args(flags)), max_pixels=DEFAULT_MAX_PIXELS)))
    del stored["channels"]
    assert resume_config(resolve_config(parse_args(flags)), stored)["channels"] == 3
    with pytest.raises(ValueError, match="the run has --channels 3, this command asks for --channels 1"):
        resume_config(resolve_config(parse_args(flags + ["--channels", "1"])), stored)


def test_an_export_takes_the_runs_channels_only_when_they_are_the_encoders(tmp_path):
    from byol_keras.encoders import convnet
    from byol_keras.export import export_encoder

    encoder = convnet((4,), input_shape=(16, 16, 1))
    with pytest.raises(ValueError, match=r"`channels` must match the encoder's input channels \(1\). "
                                         r"Received: channels=3"):
        export_encoder(encoder, tmp_path / "rgb", 16, channels=3)
    assert not (tmp_path / "rgb").exists()
    assert export_encoder(encoder, tmp_path / "gray", 16, channels=1)["channels"] == 1


@pytest.mark.slow
def test_a_grayscale_folder_stays_one_channel_from_the_command_line_to_the_served_model(tmp_path, capsys,
                                                                                        step_without_xla):
    from PIL import Image

    from byol_keras.preprocessing import center_crop_resize, normalize
    from byol_keras.cli import export as export_cli
    from byol_keras.cli import finetune, linear_eval, pretrain
    from byol_keras.run_folder import load_encoder
    from helpers import assert_clean_error, main_in_process

    folder = _gray_folder(tmp_path / "scans")
    run_dir, export = tmp_path / "run", tmp_path / "export"
    flags = ["--preset", "demo", "--data", folder, "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "6",
             "--width", "4", "--out", str(run_dir), "--export", str(export), "--verbose", "0"]
    summary = pretrain.main(flags + ["--channels", "1"])
    assert summary["steps"] == 2 and summary["knn_top1_pretrained"] is not None

    # The run's record says it once; the encoder, the views and the kNN arrays were built for it.
    config = json.loads((run_dir / "config.json").read_text())
    assert config["channels"] == 1 and config["augment"]["saturation"] == config["augment"]["hue"] == 0.0
    encoder, _ = load_encoder(str(run_dir))
    assert tuple(encoder.input_shape) == (None, 16, 16, 1)
    # The view grid in TensorBoard: one channel.
    event_files = list((run_dir / "logs" / "views").glob("events.*"))
    grids = [tf.io.decode_png(value.tensor.string_val[2]) for event in tf.compat.v1.train.summary_iterator(
        str(event_files[0])) for value in event.summary.value]
    assert len(grids) == 1 and grids[0].shape[-1] == 1

    # The export: grayscale bytes and grayscale pixels in, the embedding of what the encoder saw in training.
    served = tf.saved_model.load(summary["export_dir"])
    assert served.signatures["embed_pixels"].structured_input_signature[1]["images"].shape.as_list() == [
        None, None, None, 1]
    path = os.path.join(folder, "test", "b", "0.png")
    pixels = np.asarray(Image.open(path))[None, :, :, None]
    from_bytes = served.signatures["serving_default"](image_bytes=tf.constant([open(path, "rb").read()]))
    from_pixels = served.signatures["embed_pixels"](images=tf.constant(pixels))
    expected = encoder(normalize(center_crop_resize(pixels, 16, config["crop_fraction"])), training=False)
    np.testing.assert_allclose(from_bytes["embedding"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_pixels["embedding"], expected, rtol=1e-5, atol=1e-5)
    # byol-export on the run reads its channels from the run (the encoder it saved).
    description = export_cli.main([str(run_dir), "--out", str(export)])
    assert description["version"] == 2 and description["channels"] == 1

    # The evaluations on the run: the folder read as one channel, as the encoder takes it.
    for command, extra in ((linear_eval, []), (finetune, ["--fraction", "0.5"])):
        results = command.main([str(run_dir), "--data", folder, "--epochs", "1", "--batch-size", "6"] + extra)
        assert 0.0 <= results["top1"] <= 1.0

    # A resume must keep the run's channel count: another one stops before any work, naming the flag.
    code, stderr = main_in_process("training.pretrain", capsys, *flags, "--channels", "3")
    assert_clean_error(code, stderr, "--channels", "the run has --channels 1", "this command asks for --channels 3")
    code, stderr = main_in_process("training.pretrain", capsys, *flags)  # the default is 3: the same error
    assert_clean_error(code, stderr, "the run has --channels 1", "this command asks for --channels 3")
