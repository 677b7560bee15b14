"""Tests for byol_keras/views/: the two BYOL views (paper Table 6) and their building blocks."""

import doctest
import itertools
import json
import math
import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.preprocessing import center_crop_resize, IMAGENET_MEAN, IMAGENET_STD, normalize
from byol_keras import views
from byol_keras.views import BYOLAugment, BYOLView, LayerViews, view_configs
from byol_keras.views.blur import default_blur_kernel_size, gaussian_blur, gaussian_blur_matrix
from byol_keras.views.colour import (
    adjust_brightness,
    adjust_brightness_torchvision,
    adjust_contrast,
    adjust_contrast_torchvision,
    adjust_saturation_hue,
    adjust_saturation_torchvision,
    color_jitter,
)
from byol_keras.views.geometry import interpolation_matrix, separable_transform
from byol_keras.views.view import rare_subset_size
from helpers import ALL_OFF  # everything off but the stage under test; the crop an exact identity map
from helpers import official_crop_sizes, official_window_reference, torchvision_window_reference

CIFAR_TRAIN = pathlib.Path("/work/shared/data/cifar10/train")



def _noise(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _unnormalize(images):
    """ImageNet-normalised float back to [0, 255]."""
    return (np.asarray(images) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255.0


def _identity_transform(view, batch_size, **decisions):
    """A `sample_transform`-shaped dict that keeps the image as is, with some decisions replaced."""
    transform = {
        "crop_box": np.tile([[0.0, 0.0, 1.0, 1.0]], (batch_size, 1)).astype("float32"),
        "flip": np.zeros(batch_size, bool),
        "jitter": np.zeros(batch_size, bool),
        "brightness": np.zeros(batch_size, "float32"),
        "contrast": np.ones(batch_size, "float32"),
        "saturation": np.ones(batch_size, "float32"),
        "hue": np.zeros(batch_size, "float32"),
        "jitter_order": np.tile(np.arange(4, dtype="int32"), (batch_size, 1)),
        "grayscale": np.zeros(batch_size, bool),
        "blur": np.zeros(batch_size, bool),
        "blur_sigma": np.ones(batch_size, "float32"),
        "solarize": np.zeros(batch_size, bool),
    }
    transform.update({k: np.asarray(v) for k, v in decisions.items()})
    return transform


# --- Shapes, ranges, per-image randomness ----------------------------------------------------------


def test_views_have_shape_dtype_and_normalised_range():
    images = _noise((6, 40, 48, 3))  # not square, not the output size
    view1, view2 = BYOLAugment(32, seed=0)(images)
    low = (0.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    high = (1.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    for view in (view1, view2):
        view = np.asarray(view)
        assert view.shape == (6, 32, 32, 3)
        assert view.dtype == np.float32
        assert np.isfinite(view).all()
        assert (view >= low - 1e-5).all() and (view <= high + 1e-5).all()
    # Two independent draws of heavy augmentation are never equal.
    assert np.abs(np.asarray(view1) - np.asarray(view2)).mean() > 0.1


def test_every_image_gets_its_own_crop():
    images = np.repeat(_noise((1, 32, 32, 3)), 8, axis=0)
    crop_only = {**ALL_OFF, "crop_area": (0.08, 1.0), "crop_aspect_ratio": (0.75, 4.0 / 3.0)}
    out = np.asarray(BYOLView(16, **crop_only, seed=3)(images))
    for i in range(8):
        for j in range(i + 1, 8):
            assert np.abs(out[i] - out[j]).max() > 1e-3, (i, j)


def test_crop_boxes_are_whole_pixel_windows_inside_the_image():
    height, width = 30, 40
    view = BYOLView(16, seed=1)
    box = np.asarray(view.sample_transform(np.zeros((3000, height, width, 3)))["crop_box"], "float64")
    pixels = box * [height, width, height, width]
    assert np.allclose(pixels, np.round(pixels), atol=1e-3)  # whole pixels, as torchvision's get_params
    assert (pixels >= -1e-3).all() and (pixels[:, 2] <= height + 1e-3).all() and (pixels[:, 3] <= width + 1e-3).all()
    sizes = np.round(pixels[:, 2:] - pixels[:, :2])
    assert (sizes >= 1).all()
    # Area and aspect ratio within the ranges, up to the rounding of width and height to whole pixels.
    area = sizes.prod(1) / (height * width)
    assert (area >= 0.08 * 0.8).all() and (area <= 1.0).all()
    aspect = sizes[:, 1] / sizes[:, 0]
    assert (aspect >= 0.75 * 0.8).all() and (aspect <= 4 / 3 * 1.25).all()
    # Positions cover the image: both small and large offsets occur.
    y1, x1 = box[:, 0], box[:, 1]
    assert x1.min() < 0.05 and x1.max() > 0.5 and y1.min() < 0.05 and y1.max() > 0.5


@pytest.mark.parametrize("crop_style, reference", [("torchvision", torchvision_window_reference),
                                                    ("official", official_window_reference)])
@pytest.mark.parametrize("height, width", [(300, 400), (30, 40), (333, 500), (100, 400), (400, 90), (1, 7)])
def test_crop_window_equals_its_source_on_the_same_draws(crop_style, reference, height, width):
    """The window of `BYOLView.crop_window`, which both pipelines use, is its source's own, draw by draw, on the
    image's own height and width: torchvision's `get_params` (with its centred fallback when no attempt fits,
    frequent at 100x400) or the official `_decode_and_random_crop`."""
    view = BYOLView(16, crop_style=crop_style)
    rng = np.random.default_rng(height * 1000 + width)
    n = 3000
    uniforms = view.crop_uniforms(n, lambda shape: tf.constant(rng.uniform(size=shape).astype("float32")))
    ours = np.stack([np.asarray(v) for v in view.crop_window(float(height), float(width), uniforms)], axis=1)
    expected = reference([np.asarray(u) for u in uniforms], height, width)
    # Float32 square roots that land within an ulp of x.5 may round the other way: allow one in a thousand.
    assert np.mean(np.any(ours != expected, axis=1)) <= 1e-3
    assert (ours[:, :2] >= 0).all() and (ours[:, 0] + ours[:, 2] <= height).all() and (ours[:, 1] + ours[:, 3] <= width).all()


def test_jitter_order_is_a_random_permutation_per_image():
    order = np.asarray(BYOLView(8, seed=2).sample_transform(np.zeros((500, 8, 8, 3)))["jitter_order"])
    assert (np.sort(order, axis=1) == np.arange(4)).all()
    # All 24 orders occur, each about 1/24 of the time.
    counts = np.unique(order, axis=0, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > 5


# --- Measured rates of every stage on the configured pipeline --------------------------------------

N_RATE = 1200


def _assert_rate(fired, prob, name):
    rate = float(np.mean(fired))
    # 4.5 binomial standard deviations: a false alarm about once in 150,000 runs; p in {0, 1} exact.
    tolerance = 4.5 * math.sqrt(prob * (1.0 - prob) / len(fired))
    assert abs(rate - prob) <= tolerance + 1e-12, f"{name}: rate {rate:.4f}, expected {prob}"


@pytest.mark.parametrize("index", [0, 1])
def test_grayscale_rate_in_the_full_pipeline(index):
    # The paper's pipeline as configured (blur kernel forced to 3 taps: the default at 16 px is 1).
    config = view_configs(16, blur_kernel_size=3)[index]
    images = _noise((N_RATE, 16, 16, 3), seed=index)
    out = _unnormalize(BYOLView(**config, seed=10 + index)(images))
    # Colour noise stays coloured through every other stage; only grayscale equalises the channels.
    fired = np.abs(out - out[..., :1]).max(axis=(1, 2, 3)) < 0.05
    _assert_rate(fired, 0.2, "grayscale")


@pytest.mark.parametrize("index, prob", [(0, 1.0), (1, 0.1)])
def test_blur_rate(index, prob):
    # sigma >= 1 so that every blur is visible (at sigma ~0.1 a 3-tap blur changes nothing).
    config = view_configs(16, **ALL_OFF)[index]
    config.update(blur_prob=view_configs(16)[index]["blur_prob"], blur_sigma=(1.0, 2.0),
                  blur_kernel_size=3)
    assert config["blur_prob"] == prob
    images = _noise((N_RATE, 16, 16, 3), seed=5)
    out = _unnormalize(BYOLView(**config, seed=20 + index)(images))
    fired = np.abs(out - images).max(axis=(1, 2, 3)) > 1.0
    _assert_rate(fired, prob, "blur")


@pytest.mark.parametrize("index, prob", [(0, 0.0), (1, 0.2)])
def test_solarize_rate(index, prob):
    config = view_configs(16, blur=False, **{k: v for k, v in ALL_OFF.items()
                                             if k != "solarize_prob"})[index]
    assert config["solarize_prob"] == prob
    images = np.full((N_RATE, 16, 16, 3), 200, np.uint8)  # above the threshold: 200 -> 55
    out = _unnormalize(BYOLView(**config, seed=30 + index)(images))
    fired = out.mean(axis=(1, 2, 3)) < 127.5
    _assert_rate(fired, prob, "solarize")


def test_jitter_and_flip_rates():
    images = _noise((N_RATE, 16, 16, 3), seed=7)
    config = view_configs(16, **{**ALL_OFF, "jitter_prob": 0.8})[0]
    out = _unnormalize(BYOLView(**config, seed=40)(images))
    _assert_rate(np.abs(out - images).max(axis=(1, 2, 3)) > 1.0, 0.8, "jitter")

    config = view_configs(16, **{**ALL_OFF, "flip_prob": 0.5})[1]
    out = _unnormalize(BYOLView(**config, seed=41)(images))
    flipped = np.abs(out - images[:, :, ::-1]).max(axis=(1, 2, 3)) < 0.05
    kept = np.abs(out - images).max(axis=(1, 2, 3)) < 0.05
    assert (flipped != kept).all()  # each image exactly one of the two
    _assert_rate(flipped, 0.5, "flip")


# --- The deterministic maths, against independent references --------------------------------------


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
@pytest.mark.parametrize("out_size", [(32, 24), (8, 6), (16, 12)])
def test_whole_image_resize_equals_tf_image_resize(method, out_size):
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 12, 3)).astype("float32")
    rows = interpolation_matrix(np.zeros(2), np.full(2, 16.0), 16, out_size[0], method)
    cols = interpolation_matrix(np.zeros(2), np.full(2, 12.0), 12, out_size[1], method)
    np.testing.assert_allclose(np.asarray(rows).sum(-1), 1.0, atol=1e-5)  # rows are averages
    ours = np.asarray(separable_transform(images, rows, cols))
    expected = tf.image.resize(images, out_size, method=method, antialias=False).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-3)


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
@pytest.mark.parametrize("window, out_size", [((4, 2, 8, 6), (16, 12)), ((5, 3, 17, 29), (24, 24)), ((0, 0, 30, 40), (24, 24)),
                                              ((13, 0, 17, 40), (32, 32))])
def test_crop_resize_equals_resizing_the_cut_out_crop(method, window, out_size):
    """The native-size path (a matrix product on the whole image) reads only the window, so it equals the per-image
    path and the official code: cut the window out, then `tf.image.resize` it, edges included."""
    images = np.random.default_rng(1).uniform(0, 255, (1, 30, 40, 3)).astype("float32")
    y, x, h, w = window
    rows = interpolation_matrix(np.array([float(y)]), np.array([float(h)]), 30, out_size[0], method)
    cols = interpolation_matrix(np.array([float(x)]), np.array([float(w)]), 40, out_size[1], method)
    ours = np.asarray(separable_transform(images, rows, cols))
    expected = tf.image.resize(images[:, y:y + h, x:x + w], out_size, method=method, antialias=False).numpy()
    # TensorFlow's bicubic kernel reads its weights from a 1,024-entry table: about 0.1 of a level on 0..255.
    np.testing.assert_allclose(ours, expected, atol=0.25 if method == "bicubic" else 1e-3)


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
def test_a_whole_pixel_window_given_as_fractions_reads_the_same_pixels(method):
    """`sample_transform` gives windows as fractions of the image; back in pixels a whole-pixel end can come out an
    ulp short (2 px as 1.9999999), which once made the segment start a pixel early (`floor`) and read a pixel outside
    the window, in some images and not others, as XLA and eager round differently."""
    size = 375  # a photo's side
    y1 = np.arange(0, size - 1, dtype="float32")
    y2 = np.minimum(y1 + 1 + (y1 * 7) % 200, size).astype("float32")  # windows of many lengths
    scale = np.float32(size)
    box = np.stack([y1 / scale, y2 / scale])  # float32 throughout, as sample_transform and apply_transform
    start, length = box[0] * scale, (box[1] - box[0]) * scale
    assert (start != y1).any() and (start + length != y2).any()  # the round trip does miss whole pixels
    exact = np.asarray(interpolation_matrix(y1, y2 - y1, size, 16, method))
    round_trip = np.asarray(interpolation_matrix(start, length, size, 16, method))
    np.testing.assert_allclose(round_trip, exact, atol=1e-5)


def test_flip_mirrors_exactly_the_chosen_images():
    view = BYOLView(16, **ALL_OFF)
    images = _noise((2, 16, 16, 3)).astype("float32")
    out = np.asarray(view.apply_transform(images, _identity_transform(view, 2, flip=[True, False])))
    np.testing.assert_allclose(out[0], images[0, :, ::-1], atol=1e-3)
    np.testing.assert_allclose(out[1], images[1], atol=1e-3)


def test_blur_matrix_is_zero_padded_gaussian_convolution():
    sigma = np.array([0.7, 1.9], "float32")
    matrix = np.asarray(gaussian_blur_matrix(sigma, 10, 5))
    np.testing.assert_allclose(matrix, np.swapaxes(matrix, 1, 2), atol=1e-7)
    np.testing.assert_allclose(matrix[:, 4].sum(-1), 1.0, atol=1e-6)  # interior: all taps inside
    assert (matrix[:, 0].sum(-1) < 0.99).all()  # border: taps fall on the zero padding

    images = np.random.default_rng(2).uniform(0, 255, (2, 10, 10, 3)).astype("float32")
    ours = np.asarray(separable_transform(images, matrix, matrix))
    taps = np.arange(-2, 3)
    for b in range(2):
        kernel = np.exp(-(taps**2) / (2 * sigma[b] ** 2))
        kernel /= kernel.sum()
        horizontal = np.tile(kernel.reshape(1, 5, 1, 1), (1, 1, 3, 1)).astype("float32")
        vertical = np.tile(kernel.reshape(5, 1, 1, 1), (1, 1, 3, 1)).astype("float32")
        expected = tf.nn.depthwise_conv2d(images[b : b + 1], horizontal, [1, 1, 1, 1], "SAME")
        expected = tf.nn.depthwise_conv2d(expected, vertical, [1, 1, 1, 1], "SAME")
        np.testing.assert_allclose(ours[b], expected.numpy()[0], atol=1e-3)


@pytest.mark.parametrize("size, kernel_size, block", [(224, 23, 32), (96, 9, 32), (37, 5, 8), (20, 23, 32), (40, 9, 3),
                                                      (64, 1, 32)])
def test_block_blur_equals_the_dense_banded_matrix(size, kernel_size, block):
    """`gaussian_blur` skips the banded matrix's zeros block by block: the same numbers as the dense product, for
    sizes a block does not divide and kernels longer than the image, compiled and not."""
    rng = np.random.default_rng(size)
    images = rng.uniform(0, 1, (3, 3, size, size)).astype("float32")
    sigma = np.array([0.1, 0.9, 2.0], "float32")
    matrix = np.asarray(gaussian_blur_matrix(sigma, size, kernel_size)).astype("float64")
    expected = np.einsum("btw,bcsw->bcst", matrix, np.einsum("bsh,bchw->bcsw", matrix, images))
    np.testing.assert_allclose(np.asarray(gaussian_blur(images, sigma, kernel_size, block)), expected, atol=2e-6)
    compiled = tf.function(lambda x, s: gaussian_blur(x, s, kernel_size, block), jit_compile=True)
    np.testing.assert_allclose(np.asarray(compiled(images, sigma)), expected, atol=2e-6)


def test_saturation_and_hue_equal_tf_image_where_saturation_clips_and_hue_wraps():
    # Greys, ties between channels, black and white, saturation factors that push S past 1, rotations of
    # more than a turn either way: TensorFlow's adjust_saturation then adjust_hue, image by image.
    rng = np.random.default_rng(8)
    images = rng.uniform(0, 1, (8, 12, 12, 3)).astype("float32")
    images[:, :4] = np.round(images[:, :4] * 4) / 4
    images[:, 4, :6] = 0.0
    images[:, 4, 6:] = 1.0
    factor = np.array([0.0, 0.5, 1.0, 1.3, 2.0, 3.5, 1.0, 0.8], "float32")
    delta = np.array([0.0, 0.1, -0.1, 0.5, -0.5, 1.3, -0.7, 0.999], "float32")
    ours = np.asarray(adjust_saturation_hue(images, factor, delta))
    for b in range(8):
        expected = tf.image.adjust_hue(tf.image.adjust_saturation(images[b], factor[b]), delta[b] - np.round(delta[b]))
        np.testing.assert_allclose(ours[b], expected.numpy(), atol=2e-5, err_msg=f"image {b}")
    planar = np.asarray(adjust_saturation_hue(images.transpose(0, 3, 1, 2), factor, delta, channel_axis=1))
    np.testing.assert_allclose(planar.transpose(0, 2, 3, 1), ours, atol=1e-6)


def test_torchvision_style_jitter_applies_each_images_order():
    # All 24 orders, one per image, against torchvision's four adjustments (tested against torchvision's golden
    # numbers below) applied one after the other.
    orders = np.array(list(itertools.permutations(range(4))), "int32")
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 1, (24, 3, 5, 5)).astype("float32")
    b = rng.uniform(-0.4, 0.4, 24).astype("float32")
    c = rng.uniform(0.6, 1.4, 24).astype("float32")
    s = rng.uniform(0.0, 1.6, 24).astype("float32")
    h = rng.uniform(-0.1, 0.1, 24).astype("float32")
    steps = {
        0: lambda x, i: adjust_brightness_torchvision(x, 1.0 + b[i : i + 1]),
        1: lambda x, i: adjust_contrast_torchvision(x, c[i : i + 1], channel_axis=1),
        2: lambda x, i: adjust_saturation_torchvision(x, s[i : i + 1], channel_axis=1),
        3: lambda x, i: adjust_saturation_hue(x, np.ones(1), h[i : i + 1], channel_axis=1),
    }
    out = np.asarray(color_jitter(images, b, c, s, h, orders, style="torchvision", channel_axis=1))
    for i, order in enumerate(orders):
        expected = images[i : i + 1]
        for op in order:
            expected = np.asarray(steps[op](expected, i))
        np.testing.assert_allclose(out[i], expected[0], atol=2e-5, err_msg=f"order {order}")
    same_order = np.asarray(color_jitter(images, b, c, s, h, orders[:1].repeat(24, 0), style="torchvision", channel_axis=1))
    assert np.abs(same_order - out).max() > 0.05


def test_default_blur_kernel_is_a_tenth_of_the_image_and_odd():
    assert [default_blur_kernel_size(s) for s in (224, 128, 96, 32, 16)] == [23, 13, 9, 3, 1]
    assert BYOLView(224).blur_kernel_size == 23


def test_colour_adjustments_equal_tf_image():
    images = np.random.default_rng(3).uniform(0, 1, (2, 6, 6, 3)).astype("float32")
    delta = np.array([0.3, -0.25], "float32")
    np.testing.assert_allclose(
        adjust_brightness(images, delta), np.clip(images + delta[:, None, None, None], 0, 1),
        atol=1e-6,
    )
    factor = np.array([0.6, 1.4], "float32")
    for b in range(2):
        np.testing.assert_allclose(
            adjust_contrast(images, factor)[b],
            np.clip(tf.image.adjust_contrast(images[b], factor[b]).numpy(), 0, 1), atol=1e-5,
        )
        np.testing.assert_allclose(
            adjust_saturation_hue(images, factor, np.zeros(2))[b],
            tf.image.adjust_saturation(images[b], factor[b]).numpy(), atol=1e-5,
        )
        np.testing.assert_allclose(
            adjust_saturation_hue(images, np.ones(2), delta)[b],
            tf.image.adjust_hue(images[b], delta[b]).numpy(), atol=1e-5,
        )
    # Golden: a third of a turn takes pure red to pure green; half a turn takes it to cyan.
    red = np.array([[[[1.0, 0.0, 0.0]]]] * 2, "float32")
    np.testing.assert_allclose(
        adjust_saturation_hue(red, np.ones(2), np.array([1 / 3, 0.5])),
        [[[[0.0, 1.0, 0.0]]], [[[0.0, 1.0, 1.0]]]], atol=1e-5,
    )


def test_color_jitter_applies_each_images_order():
    # All 24 orders, one per image, against tf.image's four ops applied one after the other.
    orders = np.array(list(itertools.permutations(range(4))), "int32")
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 1, (24, 5, 5, 3)).astype("float32")
    images[:, 0, 0] = [0.9, 0.2, 0.1]
    b = rng.uniform(-0.4, 0.4, 24).astype("float32")
    c = rng.uniform(0.6, 1.4, 24).astype("float32")
    s = rng.uniform(0.8, 1.2, 24).astype("float32")
    h = rng.uniform(-0.1, 0.1, 24).astype("float32")
    steps = {
        0: lambda x, i: np.clip(x + b[i], 0, 1),
        1: lambda x, i: np.clip(tf.image.adjust_contrast(x, c[i]).numpy(), 0, 1),
        2: lambda x, i: tf.image.adjust_saturation(x, s[i]).numpy(),
        3: lambda x, i: tf.image.adjust_hue(x, h[i]).numpy(),
    }
    out = np.asarray(color_jitter(images, b, c, s, h, orders))
    for i, order in enumerate(orders):
        expected = images[i]
        for op in order:
            expected = steps[op](expected, i)
        np.testing.assert_allclose(out[i], expected, atol=2e-5, err_msg=f"order {order}")
    # The orders really give different images (brightness before / after desaturating).
    same_order = np.asarray(color_jitter(images, b, c, s, h, orders[:1].repeat(24, 0)))
    assert np.abs(same_order - out).max() > 0.05


def test_grayscale_and_solarize_values():
    view = BYOLView(4, **{**ALL_OFF, "grayscale_prob": 0.2, "solarize_prob": 0.2})
    images = np.zeros((3, 4, 4, 3), "float32")
    images[..., 0] = 255.0  # pure red
    images[2] = 200.0
    images[2, 0, 0] = 100.0
    images[2, 0, 1] = 127.5
    transform = _identity_transform(
        view, 3, grayscale=[True, False, False], solarize=[False, False, True]
    )
    out = np.asarray(view.apply_transform(images, transform))
    np.testing.assert_allclose(out[0], 0.2989 * 255.0, atol=0.05)  # luma of pure red
    np.testing.assert_allclose(out[1], images[1], atol=1e-4)
    # Solarization inverts at and above half the range: 200 -> 55, 127.5 -> 127.5, 100 stays.
    np.testing.assert_allclose(out[2, 1:], 55.0, atol=1e-3)
    np.testing.assert_allclose(out[2, 0, 0], 100.0, atol=1e-3)
    np.testing.assert_allclose(out[2, 0, 1], 127.5, atol=1e-3)


def test_grayscale_and_solarize_equal_the_keras_cv_layers_in_both_layouts():
    import keras_cv

    from byol_keras.views.colour import grayscale, solarize

    images = _noise((4, 9, 7, 3), seed=4).astype("float32")
    expected = np.asarray(keras_cv.layers.Grayscale(output_channels=3)(images))
    np.testing.assert_allclose(np.asarray(grayscale(images)), expected, atol=1e-3)
    planar = np.transpose(images, (0, 3, 1, 2))
    np.testing.assert_allclose(np.transpose(np.asarray(grayscale(planar, channel_axis=1)), (0, 2, 3, 1)), expected, atol=1e-3)
    layer = keras_cv.layers.Solarization(value_range=(0, 255), addition_factor=0.0, threshold_factor=(127.5, 127.5))
    np.testing.assert_allclose(255.0 * np.asarray(solarize(images / 255.0, 0.5)), np.asarray(layer(images)), atol=1e-3)


@pytest.mark.parametrize("batch_size, chosen", [(64, "rare"), (64, "all"), (64, "none"), (20, "rare"),
                                                (32, "at the bound"), (32, "one above")])
def test_blur_of_a_gathered_subset_equals_blurring_the_whole_batch(batch_size, chosen):
    """View 2 blurs 10 % of a batch: those images are gathered and blurred alone, up to a bound; above it (here
    forced: every image chosen, or one more than the bound) the whole batch is blurred. Either way the result is
    the plain select-of-the-blurred-batch, compiled or not."""
    view = BYOLView(16, **{**ALL_OFF, "blur_prob": 0.1})
    rng = np.random.default_rng(batch_size)
    images = rng.uniform(0, 1, (batch_size, 3, 16, 16)).astype("float32")
    bound = rare_subset_size(batch_size, 0.1)
    scattered = rng.permutation(batch_size)  # the chosen images anywhere in the batch, not only first
    mask = {"rare": rng.uniform(size=batch_size) < 0.1, "all": np.ones(batch_size, bool),
            "none": np.zeros(batch_size, bool), "at the bound": np.isin(np.arange(batch_size), scattered[:bound]),
            "one above": np.isin(np.arange(batch_size), scattered[:bound + 1])}[chosen]
    sigma = rng.uniform(0.1, 2.0, batch_size).astype("float32")
    matrix = np.asarray(gaussian_blur_matrix(sigma, 16, view.blur_kernel_size))
    blurred = np.einsum("btw,bcsw->bcst", matrix, np.einsum("bsh,bchw->bcsw", matrix, images))
    expected = np.where(mask[:, None, None, None], blurred, images)
    np.testing.assert_allclose(np.asarray(view._blur(images, mask, sigma)), expected, atol=1e-5)
    compiled = tf.function(view._blur, jit_compile=True)
    np.testing.assert_allclose(np.asarray(compiled(tf.constant(images), tf.constant(mask), tf.constant(sigma))), expected, atol=1e-5)


def test_the_rare_blurs_subset_has_the_least_expected_work():
    # s + n * P(Binomial(n, p) > s), minimised: golden values from the binomial's tail computed apart.
    assert rare_subset_size(32, 0.1) == 6 and rare_subset_size(256, 0.1) == 37
    assert rare_subset_size(64, 0.1) == 11 and rare_subset_size(8, 0.1) == 2
    assert rare_subset_size(10, 0.0) == 0 and rare_subset_size(10, 1.0) == 10
    from scipy.stats import binom

    for n, p in ((32, 0.1), (128, 0.1), (50, 0.3), (4096, 0.1)):
        costs = [s + n * binom.sf(s, n, p) for s in range(n + 1)]
        assert rare_subset_size(n, p) == int(np.argmin(costs)), (n, p)


def test_inference_mode_is_resize_and_normalise():
    images = _noise((2, 20, 24, 3))
    out = BYOLView(16, seed=0)(images, training=False)
    expected = normalize(center_crop_resize(images, 16, crop_fraction=1.0))
    np.testing.assert_allclose(out, expected, atol=1e-5)


# --- Configuration, serialisation, seeds, errors ---------------------------------------------------


def test_view_configs_are_the_papers_table():
    first, second = view_configs(224)
    assert (first["blur_prob"], first["solarize_prob"]) == (1.0, 0.0)
    assert (second["blur_prob"], second["solarize_prob"]) == (0.1, 0.2)
    view = BYOLView(**first)
    assert view.crop_area == (0.08, 1.0)
    assert view.crop_aspect_ratio == pytest.approx((0.75, 4 / 3))
    assert (view.flip_prob, view.jitter_prob, view.grayscale_prob) == (0.5, 0.8, 0.2)
    assert (view.brightness, view.contrast, view.saturation, view.hue) == (0.4, 0.4, 0.2, 0.1)
    assert (view.blur_sigma, view.blur_kernel_size) == ((0.1, 2.0), 23)
    assert (view.solarize_threshold, view.interpolation) == (0.5, "bicubic")

    no_blur = view_configs(32, blur=False, hue=0.05)
    assert [c["blur_prob"] for c in no_blur] == [0.0, 0.0]
    assert [c["hue"] for c in no_blur] == [0.05, 0.05]
    with pytest.raises(TypeError, match="hue_prob"):
        view_configs(32, hue_prob=0.5)


def test_get_config_round_trip_gives_the_same_views():
    layer = BYOLAugment(16, blur=False, seed=11, hue=0.05, name="aug")
    config = layer.get_config()
    assert {"image_size": 16, "blur": False, "seed": 11, "hue": 0.05}.items() <= config.items()
    restored = BYOLAugment.from_config(json.loads(json.dumps(config)))
    assert restored.get_config() == config
    assert restored.view2.get_config() == BYOLView.from_config(
        json.loads(json.dumps(layer.view2.get_config()))).get_config()
    images = _noise((4, 20, 20, 3))
    for ours, theirs in zip(layer(images), restored(images)):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)

    # Registered under the package name: a full serialise -> deserialise finds the class.
    serialized = keras.saving.serialize_keras_object(BYOLView(8, seed=1))
    assert serialized["registered_name"] == "byol_keras>BYOLView"
    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    np.testing.assert_allclose(revived(images), BYOLView(8, seed=1)(images), atol=1e-5)


def test_seed_reproduces_and_distinguishes():
    images = _noise((4, 16, 16, 3))
    first = BYOLAugment(16, blur_kernel_size=3, seed=5)(images)
    again = BYOLAugment(16, blur_kernel_size=3, seed=5)(images)
    other = BYOLAugment(16, blur_kernel_size=3, seed=6)(images)
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert np.abs(np.asarray(a) - np.asarray(c)).mean() > 0.1


def _message(name, value):
    return re.escape(f"{name}={value!r}")


@pytest.mark.parametrize(
    "name, value",
    [
        ("image_size", 0),
        ("image_size", -32),
        ("image_size", 32.0),
        ("flip_prob", 1.5),
        ("jitter_prob", -0.1),
        ("grayscale_prob", 2),
        ("blur_prob", -1.0),
        ("solarize_prob", 1.01),
        ("solarize_threshold", 1.5),
        ("brightness", -0.4),
        ("contrast", 1.5),
        ("saturation", -0.2),
        ("hue", 0.6),
        ("crop_area", (0.0, 1.0)),
        ("crop_area", (0.5, 0.2)),
        ("crop_area", (0.08, 1.2)),
        ("crop_aspect_ratio", (0.0, 1.0)),
        ("blur_sigma", (2.0, 0.1)),
        ("blur_kernel_size", 4),
        ("blur_kernel_size", 0),
        ("interpolation", "lanczos"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(name, value):
    kwargs = {"image_size": 32, name: value}
    with pytest.raises(ValueError, match=_message(name, value)):
        BYOLView(**kwargs)


def test_bad_probability_through_the_two_view_layer():
    with pytest.raises(ValueError, match=_message("grayscale_prob", 1.2)):
        BYOLAugment(32, grayscale_prob=1.2)
    with pytest.raises(TypeError, match=_message("seed", "a")):
        BYOLAugment(32, seed="a")


# --- Where it runs: tf.data, tf.function, XLA ------------------------------------------------------


def test_runs_as_a_tf_data_map_on_batches_of_any_size():
    images = _noise((7, 20, 20, 3))
    augment_fn = BYOLAugment(16, blur_kernel_size=3, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(3).map(augment_fn)
    sizes = []
    for view1, view2 in dataset:
        assert view1.shape[1:] == (16, 16, 3) and view2.shape[1:] == (16, 16, 3)
        assert np.isfinite(view1.numpy()).all() and np.isfinite(view2.numpy()).all()
        sizes.append(view1.shape[0])
    assert sizes == [3, 3, 1]


def test_compiled_matches_eager_and_xla_compiles():
    images = tf.constant(_noise((3, 20, 24, 3)))
    eager = BYOLAugment(16, blur_kernel_size=3, seed=9)(images)
    graph = tf.function(
        BYOLAugment(16, blur_kernel_size=3, seed=9),
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8)],
    )(images)
    for e, g in zip(eager, graph):
        np.testing.assert_allclose(g, e, atol=1e-4)

    # Under XLA TensorFlow's stateless RNG picks another algorithm, so the same seed draws other
    # views than without XLA. The maths for given draws must agree, and the draws stay seeded. A batch of 32 puts
    # windows at many positions: the whole-pixel round trip once failed here in about one image of ten.
    images = tf.constant(_noise((32, 20, 24, 3)))
    view = BYOLView(16, blur_kernel_size=3, seed=4)
    start = view.seed_generator.state.numpy()

    @tf.function(jit_compile=True)
    def sample_and_apply(batch):
        transform = view.sample_transform(batch)
        return transform, view.apply_transform(batch, transform)

    transform, out = sample_and_apply(images)
    assert np.isfinite(out.numpy()).all()
    np.testing.assert_allclose(out, view.apply_transform(images, transform), atol=1e-3)
    view.seed_generator.state.assign(start)
    np.testing.assert_allclose(sample_and_apply(images)[1], out, atol=1e-5)


def test_docstring_examples_run():
    for obj in (BYOLView, view_configs, BYOLAugment, LayerViews):
        finder = doctest.DocTestFinder(recurse=False)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in finder.find(obj, globs={**vars(views), "keras": keras, "np": np, "tf": tf}):
            assert test.examples, obj
            runner.run(test)
        assert runner.failures == 0, obj


# --- Real data ------------------------------------------------------------------------------------


def test_real_cifar10_images():
    files = sorted(CIFAR_TRAIN.glob("*/000[0-3].jpg")) if CIFAR_TRAIN.is_dir() else []
    if not files:
        print(f"CIFAR-10 JPEG folders not found under {CIFAR_TRAIN}")
        pytest.skip(f"CIFAR-10 JPEG folders not found under {CIFAR_TRAIN}")
    images = np.stack([tf.io.decode_jpeg(tf.io.read_file(str(f))).numpy() for f in files])
    assert images.shape[1:] == (32, 32, 3)
    view1, view2 = BYOLAugment(32, blur=False, seed=0)(images)
    for view in (view1, view2):
        assert view.shape == images.shape and np.isfinite(np.asarray(view)).all()
    assert np.abs(np.asarray(view1) - np.asarray(view2)).mean() > 0.1



# torchvision 0.29.1's functional ops on these float images (CHW tensors), printed once and kept here;
# the jitter row applies each image's four ops in its order (torchvision's `ColorJitter` with fixed draws).
TORCHVISION_IMAGES = np.array([
    0.95, 0.9, 0.97, 0.5822, 0.0941, 0.4331, 0.4791, 0.1597, 0.7346,
    0.1137, 0.3912, 0.5167, 0.4306, 0.5868, 0.7378, 0.9563, 0.2842, 0.6485,
    0.6962, 0.2927, 0.0015, 0.9735, 0.2984, 0.314, 0.8917, 0.5852, 0.4713,
    0.7733, 0.0303, 0.707, 0.3742, 0.0909, 0.6605, 0.9315, 0.2072, 0.6301,
    0.2982, 0.7418, 0.7222, 0.2187, 0.8299, 0.6577, 0.6828, 0.8201, 0.4286,
    0.7587, 0.8785, 0.1023, 0.8498, 0.3939, 0.4797, 0.1463, 0.6984, 0.292,
], "float32").reshape(2, 3, 3, 3)
TORCHVISION_GOLDEN = {
    "brightness": [
        1.000000, 1.000000, 1.000000, 0.756860, 0.122330, 0.563030, 0.622830, 0.207610, 0.954980,
        0.147810, 0.508560, 0.671710, 0.559780, 0.762840, 0.959140, 1.000000, 0.369460, 0.843050,
        0.905060, 0.380510, 0.001950, 1.000000, 0.387920, 0.408200, 1.000000, 0.760760, 0.612690,
        0.579975, 0.022725, 0.530250, 0.280650, 0.068175, 0.495375, 0.698625, 0.155400, 0.472575,
        0.223650, 0.556350, 0.541650, 0.164025, 0.622425, 0.493275, 0.512100, 0.615075, 0.321450,
        0.569025, 0.658875, 0.076725, 0.637350, 0.295425, 0.359775, 0.109725, 0.523800, 0.219000,
    ],
    "contrast": [
        0.814144, 0.779144, 0.828144, 0.556684, 0.215014, 0.452314, 0.484514, 0.260934, 0.663364,
        0.228734, 0.422984, 0.510834, 0.450564, 0.559904, 0.665604, 0.818554, 0.348084, 0.603094,
        0.636484, 0.354034, 0.150194, 0.830594, 0.358024, 0.368944, 0.773334, 0.558784, 0.479054,
        0.857613, 0.000000, 0.768108, 0.318828, 0.000000, 0.705333, 1.000000, 0.093378, 0.664293,
        0.216228, 0.815088, 0.788628, 0.108903, 0.934023, 0.701553, 0.735438, 0.920793, 0.392268,
        0.837903, 0.999633, 0.000000, 0.960888, 0.345423, 0.461253, 0.011163, 0.756498, 0.207858,
    ],
    "saturation": [
        0.954075, 0.896575, 0.977075, 0.627735, 0.066421, 0.456271, 0.502861, 0.135551, 0.796686,
        0.082377, 0.401502, 0.545827, 0.411600, 0.591230, 0.764880, 1.000000, 0.247841, 0.666786,
        0.743618, 0.279593, 0.000000, 1.000000, 0.267870, 0.285810, 0.925890, 0.573415, 0.442430,
        0.595789, 0.149989, 0.556009, 0.320721, 0.150741, 0.492501, 0.747653, 0.313073, 0.566813,
        0.421680, 0.687840, 0.676080, 0.382219, 0.748939, 0.645619, 0.703419, 0.785799, 0.550899,
        0.756867, 0.828747, 0.363027, 0.725844, 0.452304, 0.503784, 0.282571, 0.613831, 0.369991,
    ],
    "hue": [
        0.970000, 0.900000, 0.960600, 0.582200, 0.094100, 0.228098, 0.720558, 0.159700, 0.734600,
        0.113700, 0.221940, 0.516700, 0.430600, 0.457776, 0.737800, 0.956300, 0.284200, 0.366218,
        0.696200, 0.584474, 0.001500, 0.973500, 0.566342, 0.298400, 0.891700, 0.761768, 0.471300,
        0.482960, 0.030300, 0.773300, 0.100792, 0.090900, 0.660500, 0.885236, 0.207200, 0.931500,
        0.298200, 0.741800, 0.509272, 0.218700, 0.829900, 0.364324, 0.820100, 0.769480, 0.428600,
        0.878500, 0.625724, 0.102300, 0.849800, 0.393900, 0.698532, 0.265608, 0.698400, 0.146300,
    ],
    "jitter": [
        0.887241, 0.887241, 0.887241, 0.758480, 0.247684, 0.387913, 0.887037, 0.310593, 0.887241,
        0.262204, 0.375477, 0.683943, 0.561797, 0.590237, 0.883282, 0.887241, 0.412777, 0.594741,
        0.863933, 0.725881, 0.187241, 0.887241, 0.606297, 0.431002, 0.887241, 0.833952, 0.589852,
        0.286329, 0.072316, 0.462711, 0.024462, 0.024462, 0.346331, 0.592063, 0.188552, 0.592063,
        0.284817, 0.554304, 0.413043, 0.241149, 0.612453, 0.329616, 0.667906, 0.637154, 0.430069,
        0.657361, 0.508103, 0.207361, 0.612718, 0.335759, 0.520823, 0.233996, 0.496917, 0.161516,
    ],
}


def test_torchvision_style_jitter_matches_torchvision():
    images = TORCHVISION_IMAGES
    b = np.array([0.3, -0.25], "float32")  # factors 1.3 and 0.75
    c = np.array([0.7, 1.35], "float32")
    s = np.array([1.15, 0.6], "float32")
    h = np.array([0.07, -0.08], "float32")
    golden = {k: np.array(v, "float32").reshape(images.shape) for k, v in TORCHVISION_GOLDEN.items()}
    np.testing.assert_allclose(adjust_brightness_torchvision(images, 1.0 + b), golden["brightness"], atol=1e-5)
    np.testing.assert_allclose(adjust_contrast_torchvision(images, c), golden["contrast"], atol=1e-5)
    np.testing.assert_allclose(adjust_saturation_torchvision(images, s), golden["saturation"], atol=1e-5)
    np.testing.assert_allclose(adjust_saturation_hue(images, np.ones(2), h), golden["hue"], atol=1e-5)
    orders = np.array([[2, 0, 3, 1], [3, 1, 0, 2]], "int32")
    out = np.asarray(color_jitter(images, b, c, s, h, orders, style="torchvision"))
    np.testing.assert_allclose(out, golden["jitter"], atol=1e-5)
    # The official (TensorFlow) maths give another image for the same draws.
    assert np.abs(np.asarray(color_jitter(images, b, c, s, h, orders)) - out).max() > 0.05


def test_jitter_style_reaches_the_view_and_is_checked():
    view = BYOLView(3, **{**ALL_OFF, "jitter_prob": 1.0}, jitter_style="torchvision")
    assert BYOLView.from_config(view.get_config()).jitter_style == "torchvision"
    transform = _identity_transform(view, 2, jitter=[True, True])
    transform.update(
        brightness=np.array([0.3, -0.25], "float32"), contrast=np.array([0.7, 1.35], "float32"),
        saturation=np.array([1.15, 0.6], "float32"), hue=np.array([0.07, -0.08], "float32"),
        jitter_order=np.array([[2, 0, 3, 1], [3, 1, 0, 2]], "int32"),
    )
    out = np.asarray(view.apply_transform(255.0 * TORCHVISION_IMAGES, transform)) / 255.0
    np.testing.assert_allclose(out, np.array(TORCHVISION_GOLDEN["jitter"]).reshape(out.shape), atol=1e-4)
    first, second = view_configs(32, jitter_style="torchvision")
    assert first["jitter_style"] == second["jitter_style"] == "torchvision"
    with pytest.raises(ValueError, match="jitter_style"):
        BYOLView(32, jitter_style="pil")
    with pytest.raises(ValueError, match="style"):
        color_jitter(TORCHVISION_IMAGES, *np.zeros((4, 2), "float32"), np.zeros((2, 4), "int32"), style="PIL")


# --- The crop's law, against NumPy re-implementations of its two sources ----------------------------

def _torchvision_crops(rng, n, height, width, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(h, w) in pixels from torchvision's `RandomResizedCrop.get_params` with NumPy's own draws."""
    uniforms = (rng.uniform(size=(n, 10)), rng.uniform(size=(n, 10)), rng.uniform(size=n), rng.uniform(size=n))
    return torchvision_window_reference(uniforms, height, width, area, ratio)[:, 2:].astype("float64")


def _our_crops(crop_style, n, height, width, seed):
    view = BYOLView(16, crop_style=crop_style, seed=seed)
    box = np.asarray(view.sample_transform(np.zeros((n, height, width, 3), "uint8"))["crop_box"], "float64")
    return box, np.stack([(box[:, 2] - box[:, 0]) * height, (box[:, 3] - box[:, 1]) * width], axis=1)


@pytest.mark.parametrize("crop_style, reference", [("torchvision", _torchvision_crops), ("official", official_crop_sizes)])
@pytest.mark.parametrize("height, width", [(30, 40), (64, 64)])
def test_crop_sizes_follow_the_source_distribution(crop_style, reference, height, width):
    from scipy.stats import ks_2samp

    n = 20_000
    _, ours = _our_crops(crop_style, n, height, width, seed=5)
    ours = np.round(ours)  # Whole pixels up to float32 rounding (checked above); KS needs exact ties.
    theirs = reference(np.random.default_rng(0), n, height, width)
    for name, a, b in [("height", ours[:, 0], theirs[:, 0]), ("width", ours[:, 1], theirs[:, 1]),
                       ("area", ours.prod(1), theirs.prod(1)), ("log aspect", np.log(ours[:, 1] / ours[:, 0]),
                                                                np.log(theirs[:, 1] / theirs[:, 0]))]:
        assert ks_2samp(a, b).pvalue > 1e-3, name
    # Power: a uniform (not log-uniform) aspect ratio makes wide crops more likely; the test sees it.
    if height == width:
        assert abs(np.mean(ours[:, 1] > ours[:, 0]) - np.mean(theirs[:, 1] > theirs[:, 0])) < 0.02
        uniform_aspect = np.random.default_rng(1).uniform(3 / 4, 4 / 3, n)
        assert ks_2samp(np.log(uniform_aspect), np.log(theirs[:, 1] / theirs[:, 0])).pvalue < 1e-6


def test_official_crop_is_whole_pixels_inside_the_image():
    height, width = 30, 40
    box, sizes = _our_crops("official", 5000, height, width, seed=2)
    pixels = box * [height, width, height, width]
    assert np.allclose(pixels, np.round(pixels), atol=1e-3)
    assert (pixels >= -1e-3).all() and (pixels[:, 2] <= height + 1e-3).all() and (pixels[:, 3] <= width + 1e-3).all()
    assert (sizes >= 1).all()
    # Offsets are uniform over the free room: the first and the last position both occur.
    full_width = np.isclose(sizes[:, 1], width)
    assert full_width.any() and np.allclose(pixels[full_width, 1], 0, atol=1e-3)
    small = sizes[:, 1] < width / 2
    assert pixels[small, 1].min() < 0.5 and (pixels[small, 3] > width - 0.5).any()


def test_crop_style_is_validated_and_serialised():
    with pytest.raises(ValueError, match="`crop_style` must be one of .* Received: crop_style='tensorflow'"):
        BYOLView(16, crop_style="tensorflow")
    view = BYOLView(16, crop_style="official")
    assert BYOLView.from_config(view.get_config()).crop_style == "official"
    assert BYOLAugment(16, crop_style="official").view1.crop_style == "official"


def test_keyed_draws_follow_the_views_laws_and_depend_on_the_key_alone():
    """`keyed_draw` (the pipelines' stateless draws) gives the laws of the seed generator's draws: decisions at
    their probabilities, factors uniform on their ranges, independent from batch to batch; and the same key gives
    the same draws on a new view, whatever was drawn before."""
    from scipy import stats

    from byol_keras.views import BYOLView, keyed_draw

    view = BYOLView(16, seed=0, jit_compile=False)
    images = np.zeros((256, 16, 16, 3), "float32")
    draws = [view.sample_transform(images, keyed_draw(tf.constant([7, i], tf.int64))) for i in range(8)]
    flat = {name: np.concatenate([np.asarray(d[name]) for d in draws]) for name in draws[0]}
    n = len(flat["flip"])
    for name, probability in (("flip", 0.5), ("jitter", 0.8), ("grayscale", 0.2), ("blur", 1.0), ("solarize", 0.0)):
        assert abs(flat[name].mean() - probability) <= 4 * np.sqrt(probability * (1 - probability) / n) + 1e-9, name
    for name, (low, high) in (("brightness", (-0.4, 0.4)), ("contrast", (0.6, 1.4)), ("hue", (-0.1, 0.1))):
        assert stats.kstest(flat[name], stats.uniform(low, high - low).cdf).pvalue > 1e-3, name
    consecutive = np.stack([np.asarray(d["brightness"]) for d in draws])
    assert abs(np.corrcoef(consecutive[:-1].ravel(), consecutive[1:].ravel())[0, 1]) < 0.1
    again = BYOLView(16, seed=0, jit_compile=False)
    again.sample_transform(images)  # the generator moves; keyed draws do not depend on it
    np.testing.assert_array_equal(again.sample_transform(images, keyed_draw(tf.constant([7, 3], tf.int64)))["hue"],
                                  draws[3]["hue"])


def test_layer_views_round_trip_their_config_and_normalise_any_channel_count():
    from byol_keras.preprocessing import channel_stats
    from byol_keras.views import LayerViews

    def views():
        return LayerViews([keras.layers.RandomFlip("horizontal", seed=0)],
                          [keras.layers.RandomFlip("vertical", seed=1), keras.layers.RandomContrast(0.5, seed=2)])

    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1)).astype("uint8")
    first, second = views()(images)
    again = LayerViews.from_config(views().get_config())
    for mine, theirs in zip((first, second), again(images)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-6)
    # One channel: the mean of ImageNet's statistics, so a flip alone is the flipped, normalised image.
    mean, std = channel_stats(1)
    assert mean == (pytest.approx(0.449, abs=1e-3),) and std == (pytest.approx(0.226, abs=1e-3),)
    flips = np.asarray(first) * std[0] + mean[0]
    assert all(np.allclose(f, im / 255.0, atol=1e-5) or np.allclose(f, im[:, ::-1] / 255.0, atol=1e-5)
               for f, im in zip(flips, images))
    with pytest.raises(TypeError, match="Received: view1=.*of type function"):
        LayerViews(lambda x: x)


@pytest.mark.parametrize("style", ["tensorflow", "torchvision"])
def test_brightness_contrast_is_the_colour_jitter_of_a_gray_image(style):
    from byol_keras.views.colour import brightness_contrast, color_jitter

    rng = np.random.default_rng(0)
    gray = rng.uniform(size=(6, 5, 5, 1)).astype("float32")
    brightness, contrast = rng.uniform(-0.4, 0.4, 6).astype("float32"), rng.uniform(0.6, 1.4, 6).astype("float32")
    saturation, hue = rng.uniform(0.8, 1.2, 6).astype("float32"), rng.uniform(-0.1, 0.1, 6).astype("float32")
    order = np.argsort(rng.uniform(size=(6, 4)), axis=1).astype("int32")
    expected = color_jitter(np.repeat(gray, 3, axis=-1), brightness, contrast, saturation, hue, order, style=style)
    got = brightness_contrast(gray, brightness, contrast, order, style=style)
    for channel in range(3):
        np.testing.assert_allclose(np.asarray(got)[..., 0], np.asarray(expected)[..., channel], atol=1e-4)  # luma weights summing to 1 in float32


def test_grayscale_and_multiband_views_keep_their_channels():
    gray = np.random.default_rng(0).integers(0, 256, (4, 20, 20, 1), dtype="uint8")
    augment = BYOLAugment(16, seed=0, channels=1)
    assert [view.saturation + view.hue + view.grayscale_prob for view in augment.views] == [0.0, 0.0]
    first, second = next(iter(tf.data.Dataset.from_tensor_slices(gray).batch(4).map(augment)))
    assert first.shape == second.shape == (4, 16, 16, 1)
    assert BYOLAugment.from_config(augment.get_config()).view2.channels == 1
    tiles = np.random.default_rng(1).integers(0, 256, (4, 20, 20, 4), dtype="uint8")
    assert [tuple(v.shape) for v in BYOLAugment(16, blur=False, seed=0, channels=4)(tiles)] == [(4, 16, 16, 4)] * 2
    # RGB views of grayscale images, and hue for one channel, are refused naming the argument.
    with pytest.raises(ValueError, match=r"`images` must have 3 channel\(s\).*channels=1"):
        BYOLAugment(16, seed=0)(gray)
    with pytest.raises(ValueError, match="Received: hue=0.1, channels=1"):
        BYOLView(16, saturation=0.0, grayscale_prob=0.0, channels=1)
