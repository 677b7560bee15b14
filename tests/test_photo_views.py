"""Views from the whole photo: `pretrain_dataset` draws each view's crop on the image's own height and width.

Until 2026-12-05 the pipeline resized the shorter side and kept the centre square before any random crop, so
the left and right quarters of a 4:3 photo never reached a view. These tests would fail on that pipeline.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras import data, decoding, sources
from byol_keras.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from byol_keras.views import BYOLAugment
from helpers import official_window_reference, torchvision_window_reference

# Every stage after the crop off: a view is its crop, resized and normalised.
CROP_ONLY = dict(blur=False, flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, solarize_prob=0.0)
REFERENCES = {"torchvision": torchvision_window_reference, "official": official_window_reference}


def _unnormalize(views):
    return (np.asarray(views) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255.0


def _edge_band_photo(height=60, width=80, band=10):
    """A 4:3 image that is black except for two white bands outside its centre square."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :band] = 255
    image[:, width - band:] = 255
    return image


def _folder(root, images, extension=".png", **save_kwargs):
    os.makedirs(root, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(os.path.join(root, f"{i:03d}{extension}"), **save_kwargs)
    return root


def _band_rate(crop_style, height, width, band, n=40_000):
    """P(a window reaches a band) under the crop's own law: its NumPy reference, NumPy's draws."""
    rng = np.random.default_rng(0)
    if crop_style == "official":
        uniforms = [rng.uniform(size=n) for _ in range(4)]
    else:
        uniforms = [rng.uniform(size=(n, 10)), rng.uniform(size=(n, 10)), rng.uniform(size=n), rng.uniform(size=n)]
    y1, x1, h, w = REFERENCES[crop_style](uniforms, height, width).T
    return np.mean((x1 < band) | (x1 + w > width - band))


@pytest.mark.parametrize("crop_style", ["torchvision", "official"])
@pytest.mark.parametrize("view_size, path", [(24, "per image"), (48, "native size")])
def test_the_edges_of_a_4_3_photo_reach_the_views_at_the_rate_the_crop_law_predicts(tmp_path, crop_style, view_size, path):
    height, width, band = 60, 80, 10
    source = sources.load_source(_folder(str(tmp_path / "photos"), [_edge_band_photo(height, width, band)] * 64))
    augment = BYOLAugment(view_size, seed=1, crop_style=crop_style, **CROP_ONLY)
    # Both paths on the same photos (by default 60x80 images take the native-size path at either view side).
    forced = "native" if path == "native size" else "per_image"
    dataset = data.pretrain_dataset(source, augment, batch_size=64, seed=2, path=forced).repeat(8)
    seen = []
    for view1, view2, _ in dataset:
        for views in (view1, view2):
            seen.append(_unnormalize(views).reshape(len(views), -1).max(axis=1) > 20.0)
    seen = np.concatenate(seen)
    expected = _band_rate(crop_style, height, width, band)
    tolerance = 4.0 * np.sqrt(expected * (1 - expected) / len(seen)) + 0.005
    # A centre-square pipeline shows the bands in no view at all (rate 0); the whole-image law about half.
    assert 0.3 < expected < 0.8
    assert abs(seen.mean() - expected) < tolerance, (seen.mean(), expected, len(seen))


def test_per_image_crops_are_the_reference_windows_of_the_original_image_resized(tmp_path):
    """The per-image path end to end: each view's window is the crop law's on the file's own 45x70 size, drawn
    from the stream's stateless keys (`data.element_key`); the crop is that window of the decoded file, resized (bicubic, no
    antialiasing, as the official code) and rounded to uint8."""
    rng = np.random.default_rng(3)
    photos = [rng.integers(0, 256, (45, 70, 3), dtype=np.uint8) for _ in range(6)]
    source = sources.load_source(_folder(str(tmp_path / "p"), photos))
    seed = 11
    for crop_style in ("torchvision", "official"):
        augment = BYOLAugment(20, seed=0, crop_style=crop_style, **CROP_ONLY)
        crops1, crops2, labels = next(iter(data.pretrain_dataset(
            source, augment, batch_size=6, shuffle=False, seed=seed, views_on="device", repeat=True,
            path="per_image")))  # 45x70 images at 20 px take the native-size path by default
        assert crops1.dtype == crops2.dtype == tf.uint8 and tuple(crops1.shape) == (6, 20, 20, 3)
        for i in range(6):
            key = data.element_key(seed, epoch=0, position=i)
            for index, (view, crops) in enumerate(zip(augment.views, (crops1, crops2))):
                # The same stateless draws as the pipeline, then the NumPy reference of the window.
                draws = iter(tf.unstack(tf.random.experimental.stateless_split(
                    tf.random.experimental.stateless_fold_in(key, index), 4), num=4))
                uniforms = [np.asarray(u) for u in view.crop_uniforms(1, lambda s: tf.random.stateless_uniform(s, next(draws)))]
                y, x, h, w = REFERENCES[crop_style](uniforms, 45, 70)[0]
                window = photos[i][y:y + h, x:x + w].astype("float32")
                expected = tf.image.resize(window, (20, 20), method="bicubic", antialias=False).numpy()
                expected = np.round(np.clip(expected, 0, 255))
                np.testing.assert_array_equal(np.asarray(crops[i]), expected, err_msg=f"{crop_style} {i} {index}")


def _jpeg_photo(path, height=300, width=400):
    """A smooth, colourful, non-square photo-like JPEG (quality 90), as users' photos are."""
    y, x = np.mgrid[:height, :width] / np.array([height, width])[:, None, None]
    image = np.stack([128 + 100 * np.sin(9 * x + 3 * y), 128 + 100 * np.cos(7 * y - 2 * x), 255 * x * y], -1)
    noise = np.random.default_rng(0).normal(0, 12, image.shape)
    Image.fromarray(np.clip(image + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def test_jpeg_window_decoding_equals_decoding_the_whole_image_then_cropping(tmp_path):
    contents = open(_jpeg_photo(str(tmp_path / "photo.jpg")), "rb").read()
    whole = tf.io.decode_jpeg(contents, channels=3, dct_method=decoding.JPEG_DCT_METHOD).numpy().astype(int)
    rng = np.random.default_rng(0)
    differences, inner = [], []
    for _ in range(60):
        h, w = rng.integers(1, 301), rng.integers(1, 401)
        y, x = rng.integers(0, 301 - h), rng.integers(0, 401 - w)
        window = tf.io.decode_and_crop_jpeg(contents, [y, x, h, w], channels=3, dct_method=decoding.JPEG_DCT_METHOD)
        difference = np.abs(window.numpy().astype(int) - whole[y:y + h, x:x + w])
        differences.append(difference.ravel())
        inner.append(difference[2:-2, 2:-2].ravel())
    differences, inner = np.concatenate(differences), np.concatenate(inner)
    # libjpeg upsamples chroma from neighbouring pixels; at a window's edge those outside it are missing, so
    # within two pixels of the edge a few values move by some levels (0.13 % of the pixels here, at most 6).
    # Inside, it is the same decoder, bit for bit.
    assert inner.size > 10**6 and inner.max() == 0
    assert differences.max() <= 8 and np.mean(differences > 0) < 0.005


def test_photo_pipeline_is_seeded_and_fits_with_views_on_the_device(tmp_path):
    root = str(tmp_path / "jpegs")
    os.makedirs(root)
    for i in range(8):
        _jpeg_photo(os.path.join(root, f"{i}.jpg"), height=90 + 10 * i, width=120)  # sizes differ: per image
    source = sources.load_source(root)
    assert not data.native_size(source, 32)

    def first_batch(seed):
        augment = BYOLAugment(32, seed=0, blur=False)
        return [t.numpy() for t in next(iter(data.pretrain_dataset(source, augment, 8, seed=seed, views_on="device")))]

    a, b, c = first_batch(5), first_batch(5), first_batch(6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])

    from byol_keras import BYOL, convnet

    augment = BYOLAugment(32, seed=0, blur=False)
    model = BYOL(convnet(input_shape=(32, 32, 3), widths=(4, 8)), projection_dim=8, projection_hidden_dim=16,
                 prediction_hidden_dim=16, augment=augment, augment_on="device")
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    dataset = data.pretrain_dataset(source, augment, 4, seed=0, views_on="device")
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_pretrain_dataset_arguments_for_the_views(tmp_path):
    source = sources.load_source("digits", split="test", image_size=8)
    augment = BYOLAugment(8, blur=False)
    with pytest.raises(ValueError, match=r"`image_size` must be None or the BYOLAugment's own image_size \(8\).*image_size=16"):
        data.pretrain_dataset(source, augment, 8, image_size=16)
    with pytest.raises(ValueError, match=r"`image_size` is needed when `views` is not a BYOLAugment.*image_size=None"):
        data.pretrain_dataset(source, lambda x: (x, x), 8)
    with pytest.raises(ValueError, match=r"views_on='device'.*BYOLAugment.*views=None"):
        data.pretrain_dataset(source, None, 8, image_size=8, views_on="device")
    with pytest.raises(ValueError, match=r"`views_on` must be 'data' or 'device'. Received: views_on='gpu'"):
        data.pretrain_dataset(source, augment, 8, views_on="gpu")
    with pytest.raises(ValueError, match=r"`crops` must be 8x8 images.*\(2, 9, 9, 3\)"):
        augment.augment_crops(np.zeros((2, 9, 9, 3), "uint8"), np.zeros((2, 9, 9, 3), "uint8"))


def test_views_finished_in_chunks_keep_each_image_with_its_label(tmp_path):
    # Batch 48 is finished as two chunks of 24 and joined: every view must still sit beside its own label.
    colours = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}
    for name, colour in colours.items():
        _folder(str(tmp_path / name), [np.full((30, 40, 3), colour, np.uint8)] * 20)
    source = sources.load_source(str(tmp_path))
    assert data._view_chunk(48) == 24
    augment = BYOLAugment(16, seed=0, **CROP_ONLY)
    view1, view2, labels = next(iter(data.pretrain_dataset(source, augment, batch_size=48, seed=3)))
    assert view1.shape == view2.shape == (48, 16, 16, 3) and labels.shape == (48,)
    assert len(set(labels.numpy().tolist())) == 3  # shuffled across classes
    for views in (view1, view2):
        channel = _unnormalize(views).mean(axis=(1, 2)).argmax(axis=1)  # blue 2, green 1, red 0
        np.testing.assert_array_equal(channel, 2 - labels.numpy())
