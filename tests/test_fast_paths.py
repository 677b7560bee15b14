"""The fast paths give the results of the plain ones: XLA-compiled views, views made on the device
(`BYOL(augment=..., augment_on="device")`), XLA by default where it measured faster. No timings here (see benchmarks/)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.preprocessing import normalize
from byol_keras.views import BYOLAugment, BYOLView, view_configs
from byol_keras.byol import BYOL
from byol_keras.data import pretrain_dataset
from byol_keras.sources import load_source
from helpers import ALL_OFF  # every stage off, the crop an exact identity map

N_RATE = 1200


def _noise(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _unnormalize(images):
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return (np.asarray(images) * std + mean) * 255.0


def _assert_rate(fired, prob, name):
    rate = float(np.mean(fired))
    # 4.5 binomial standard deviations: a false alarm about once in 150,000 runs; p in {0, 1} exact.
    tolerance = 4.5 * math.sqrt(prob * (1.0 - prob) / len(fired))
    assert abs(rate - prob) <= tolerance + 1e-12, f"{name}: rate {rate:.4f}, expected {prob}"


def _run_view(view, images, placement):
    """One view of `images` made where `placement` says.

    "data": a `tf.data` map over batches (the XLA-compiled `apply_transform` inside a plain graph);
    "device": inside an XLA-compiled function, as in `BYOL.train_step` with `augment_on="device"`
    (there the random draws are compiled too). "eager": op by op, the reference.
    """
    if placement == "eager":
        return np.asarray(view(images))
    if placement == "data":
        dataset = tf.data.Dataset.from_tensor_slices(images).batch(400).map(view)
        return np.concatenate([np.asarray(batch) for batch in dataset])
    compiled = tf.function(lambda x: view(x), jit_compile=True)
    return np.concatenate([np.asarray(compiled(images[i : i + 400])) for i in range(0, len(images), 400)])


def _tiny_encoder(size=16):
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(4, 3, padding="same", use_bias=False),  # a bias before BN only adds noise
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="tiny",
    )


def _byol(**kwargs):
    return BYOL(_tiny_encoder(), projection_dim=8, projection_hidden_dim=16, prediction_hidden_dim=16,
                total_steps=10, **kwargs)


# --- XLA-compiled views ------------------------------------------------------------------------------


@pytest.mark.slow
def test_xla_views_in_tf_data_equal_the_plain_graph_for_the_same_seed():
    images = _noise((24, 20, 24, 3))
    outputs = {}
    for jit in (True, False):
        augment = BYOLAugment(16, blur_kernel_size=3, seed=5, jit_compile=jit)
        dataset = tf.data.Dataset.from_tensor_slices(images).batch(8).map(augment)
        outputs[jit] = [np.asarray(view) for pair in dataset for view in pair]
    # The random draws stay outside XLA: the same seed draws the same views, only rounding differs.
    for fast, plain in zip(outputs[True], outputs[False]):
        np.testing.assert_allclose(fast, plain, atol=2e-4)
    assert np.abs(outputs[True][0] - outputs[True][1]).mean() > 0.1  # and they are augmented


def test_jit_compile_is_validated_and_round_trips():
    with pytest.raises(TypeError, match=r"`jit_compile` must be a bool. Received: jit_compile='yes'"):
        BYOLView(16, jit_compile="yes")
    augment = BYOLAugment(16, blur=False, seed=1, jit_compile=False)
    assert not augment.view1.jit_compile and not augment.view2.jit_compile
    restored = BYOLAugment.from_config(augment.get_config())
    assert restored.get_config() == augment.get_config()
    assert not restored.view1.jit_compile
    assert BYOLView.from_config(BYOLView(16).get_config()).jit_compile is True


# --- Same view distribution wherever the views are made ---------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_random_draws_compiled_on_device_have_the_same_distribution(index):
    """`sample_transform` under XLA (another RNG algorithm) draws from the same distributions."""
    config = view_configs(16, blur_kernel_size=3)[index]
    view = BYOLView(**config, seed=50 + index)
    shape_only = np.zeros((4000, 24, 20, 3), np.uint8)
    plain = {k: np.asarray(v) for k, v in view.sample_transform(shape_only).items()}
    compiled = tf.function(view.sample_transform, jit_compile=True)(tf.constant(shape_only))
    compiled = {k: np.asarray(v) for k, v in compiled.items()}
    probabilities = {"flip": 0.5, "jitter": 0.8, "grayscale": 0.2, "blur": config["blur_prob"],
                     "solarize": config["solarize_prob"]}
    for key, prob in probabilities.items():
        _assert_rate(compiled[key], prob, f"{key} (device)")
        _assert_rate(plain[key], prob, f"{key} (data)")
    # Continuous draws: two-sample z-test on mean and standard deviation (5 sigma).
    box = {name: np.stack([plain["crop_box"], compiled["crop_box"]]) for name in ("crop_box",)}["crop_box"]
    area = (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])
    samples = {
        "crop_area": area,
        "crop_top": box[..., 0],
        "brightness": np.stack([plain["brightness"], compiled["brightness"]]),
        "contrast": np.stack([plain["contrast"], compiled["contrast"]]),
        "saturation": np.stack([plain["saturation"], compiled["saturation"]]),
        "hue": np.stack([plain["hue"], compiled["hue"]]),
        "blur_sigma": np.stack([plain["blur_sigma"], compiled["blur_sigma"]]),
        "first_jitter_op": np.stack([plain["jitter_order"][:, 0], compiled["jitter_order"][:, 0]]),
    }
    n = len(shape_only)
    for name, (a, b) in samples.items():
        a, b = a.astype("float64"), b.astype("float64")
        spread = math.sqrt((a.var() + b.var()) / n)
        assert abs(a.mean() - b.mean()) <= 5 * spread + 1e-9, f"{name}: means {a.mean()} vs {b.mean()}"
        assert abs(a.std() - b.std()) <= 5 * spread + 1e-9, f"{name}: stds {a.std()} vs {b.std()}"
    # Hard constraints hold for compiled draws too.
    assert (np.sort(compiled["jitter_order"], axis=1) == np.arange(4)).all()
    assert (compiled["crop_box"] >= -1e-6).all() and (compiled["crop_box"] <= 1 + 1e-6).all()


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["data", "device"])
def test_stage_rates_are_the_papers_in_both_placements(placement):
    """The measured rate of every stage (tests/test_augment.py's checks) where the views are made."""
    images = _noise((N_RATE, 16, 16, 3), seed=5)
    for index, prob in ((0, 1.0), (1, 0.1)):
        config = view_configs(16, **ALL_OFF)[index]
        config.update(blur_prob=view_configs(16)[index]["blur_prob"], blur_sigma=(1.0, 2.0), blur_kernel_size=3)
        out = _unnormalize(_run_view(BYOLView(**config, seed=20 + index), images, placement))
        _assert_rate(np.abs(out - images).max(axis=(1, 2, 3)) > 1.0, prob, f"blur view {index + 1}")

    # Grayscale in the paper's whole pipeline: only grayscale equalises the channels of colour noise.
    out = _unnormalize(_run_view(BYOLView(**view_configs(16, blur_kernel_size=3)[1], seed=11), images, placement))
    _assert_rate(np.abs(out - out[..., :1]).max(axis=(1, 2, 3)) < 0.05, 0.2, "grayscale")

    bright = np.full((N_RATE, 16, 16, 3), 200, np.uint8)  # above the threshold: 200 -> 55
    config = view_configs(16, blur=False, **{k: v for k, v in ALL_OFF.items() if k != "solarize_prob"})[1]
    out = _unnormalize(_run_view(BYOLView(**config, seed=31), bright, placement))
    _assert_rate(out.mean(axis=(1, 2, 3)) < 127.5, 0.2, "solarize")

    config = view_configs(16, **{**ALL_OFF, "jitter_prob": 0.8})[0]
    out = _unnormalize(_run_view(BYOLView(**config, seed=40), images, placement))
    _assert_rate(np.abs(out - images).max(axis=(1, 2, 3)) > 1.0, 0.8, "jitter")

    config = view_configs(16, **{**ALL_OFF, "flip_prob": 0.5})[1]
    out = _unnormalize(_run_view(BYOLView(**config, seed=41), images, placement))
    flipped = np.abs(out - images[:, :, ::-1]).max(axis=(1, 2, 3)) < 0.05
    kept = np.abs(out - images).max(axis=(1, 2, 3)) < 0.05
    assert (flipped != kept).all()
    _assert_rate(flipped, 0.5, "flip")


# --- BYOL with the views made inside train_step ------------------------------------------------------


def _identity_views():
    # Whole-image crop at the same size, every stage off: the views are normalize(images) exactly.
    return BYOLAugment(16, blur=False, seed=0, **ALL_OFF)


@pytest.mark.slow
def test_device_augmentation_gives_the_same_step_as_views_from_the_dataset():
    images = _noise((8, 16, 16, 3), seed=3)
    keras.utils.set_random_seed(7)
    on_data = _byol()
    keras.utils.set_random_seed(7)
    on_device = _byol(augment=_identity_views(), augment_on="device")
    on_device.set_weights(on_data.get_weights() + on_device.get_weights()[len(on_data.get_weights()):])
    for model in (on_data, on_device):
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=False)
    views = normalize(images)
    for _ in range(2):
        logs_data = on_data.train_on_batch(views, views, return_dict=True)  # packed as (view1, view2)
        logs_device = on_device.train_on_batch(images, return_dict=True)
        np.testing.assert_allclose(logs_device["loss"], logs_data["loss"], rtol=1e-5)
    for variable, a, b in zip(on_data.weights, on_data.get_weights(), on_device.get_weights()):
        if variable.path.endswith("dense_hidden/bias"):
            # A bias right before BatchNorm has a zero gradient up to rounding: both stay at noise level.
            assert np.abs(a).max() < 1e-3 and np.abs(b).max() < 1e-3, variable.path
            continue
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=variable.path)
    # The target moved by the EMA in both.
    np.testing.assert_allclose(on_device.target_encoder.get_weights()[0], on_data.target_encoder.get_weights()[0],
                               rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_device_augmentation_fits_under_xla_from_raw_image_batches():
    source = load_source("digits", split="train", image_size=16)
    dataset = pretrain_dataset(source, None, batch_size=32, image_size=16, seed=0)
    images, labels = next(iter(dataset))
    assert images.dtype == tf.uint8 and tuple(images.shape) == (32, 16, 16, 3)
    assert labels.dtype == tf.int32 and tuple(labels.shape) == (32,)
    model = _byol(augment=BYOLAugment(16, blur=False, seed=0), augment_on="device", num_classes=10)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))  # XLA: the default with device views
    assert model.jit_compile is True
    history = model.fit(dataset.take(4), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert 0.0 < history.history["loss"][-1] < 4.0
    assert "probe_accuracy" in history.history
    logs = model.evaluate(dataset.take(1), return_dict=True, verbose=0)
    assert np.isfinite(logs["loss"])


def test_augment_on_round_trips_and_is_validated():
    model = _byol(augment=BYOLAugment(16, blur=False, seed=3), augment_on="device")
    config = model.get_config()
    assert config["augment_on"] == "device"
    restored = BYOL.from_config(config)
    assert restored.augment_on == "device"
    assert restored.augment.get_config() == model.augment.get_config()
    assert BYOL.from_config(_byol().get_config()).augment is None

    with pytest.raises(ValueError, match=r"`augment_on` must be 'data' or 'device'. Received: augment_on='gpu'"):
        _byol(augment_on="gpu")
    with pytest.raises(ValueError, match=r"Received: augment_on='device', augment=None"):
        _byol(augment_on="device")
    with pytest.raises(ValueError, match=r"only used there"):
        _byol(augment=BYOLAugment(16, blur=False))
    with pytest.raises(TypeError, match=r"`augment` must be a keras layer"):
        _byol(augment=lambda x: (x, x), augment_on="device")


def test_xla_default_follows_the_measured_rule_and_can_be_overridden(monkeypatch):
    from byol_keras import distribute

    model = _byol()
    monkeypatch.setattr(distribute, "_cpu_only", lambda: False)
    model.compile(optimizer="sgd")
    assert model.jit_compile is True
    monkeypatch.setattr(distribute, "_cpu_only", lambda: True)
    monkeypatch.setattr(distribute, "_onednn_enabled", lambda: True)  # with oneDNN off a CPU takes XLA
    model.compile(optimizer="sgd")
    assert model.jit_compile is False
    model.compile(optimizer="sgd", jit_compile=True)
    assert model.jit_compile is True
    model.compile(optimizer="sgd", jit_compile=False)
    assert model.jit_compile is False
    model.compile(optimizer="sgd", run_eagerly=True)
    assert model.jit_compile is False
