"""Tests for byol_keras.eval_data: labelled arrays for a kNN bank, and the supervised evaluation pipeline."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras import eval_data
from byol_keras.preprocessing import center_crop_resize, normalize
from byol_keras.eval_data import classification_dataset, load_arrays
from byol_keras.preprocessing import default_crop_fraction
from byol_keras.sources import load_source
from helpers import class_folder, colour_images, official_crop_sizes


# --- labelled arrays ------------------------------------------------------------------------------------


def test_load_arrays_is_the_centre_crop_of_every_example(tmp_path):
    class_folder(str(tmp_path / "e"), per_class=(3, 2, 2), size=20)
    source = load_source(str(tmp_path / "e"))
    images, labels = load_arrays(source, image_size=14, crop_fraction=0.875)
    decoded = [im for im, _ in source.dataset.as_numpy_iterator()]
    expected = np.stack([np.round(center_crop_resize(im, 14, 0.875).numpy()) for im in decoded]).astype(np.uint8)
    np.testing.assert_array_equal(images, expected)  # every example, in order, as uint8
    np.testing.assert_array_equal(labels, source.labels)
    with pytest.raises(ValueError, match="crop_fraction=0"):
        load_arrays(source, 14, crop_fraction=0)


def test_load_arrays_first_n_per_class(tmp_path):
    expected = class_folder(str(tmp_path / "k"), per_class=(3, 2, 4), size=10)
    source = load_source(str(tmp_path / "k"))
    images, labels = load_arrays(source, image_size=10, limit_per_class=2, crop_fraction=1.0)
    assert images.dtype == np.uint8 and images.shape == (6, 10, 10, 3)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    paths = sorted(expected)
    first_two = [p for c in "abc" for p in [q for q in paths if f"/{c}/" in q][:2]]
    np.testing.assert_array_equal(images, np.stack([np.asarray(Image.open(p)) for p in first_two]))
    everything, all_labels = load_arrays(source, image_size=10, crop_fraction=1.0)
    assert len(everything) == 9 and all_labels.tolist() == source.labels.tolist()


def test_load_arrays_rejects_what_is_not_a_source():
    with pytest.raises(TypeError, match="source='digits'"):
        load_arrays("digits", 8)


# --- the supervised pipeline ---------------------------------------------------------------------------


def test_classification_dataset_test_transform_matches_augment():
    rng = np.random.default_rng(0)
    images, labels = colour_images(rng, 3, size=12)
    batches = list(classification_dataset((images, labels), image_size=8, batch_size=4, training=False))
    assert [b[0].shape for b in batches] == [(4, 8, 8, 3), (2, 8, 8, 3)]
    got = np.concatenate([b[0].numpy() for b in batches])
    np.testing.assert_allclose(got, normalize(center_crop_resize(images, 8)).numpy(), atol=1e-4)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), labels)


def test_classification_dataset_training_transform_is_random():
    images = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3)).astype("uint8")
    dataset = classification_dataset((images, np.arange(4)), 8, batch_size=4, training=True, seed=0)
    first, second = next(iter(dataset)), next(iter(dataset))
    assert first[0].shape == (4, 8, 8, 3) and first[0].dtype == tf.float32
    order1, order2 = np.argsort(first[1].numpy()), np.argsort(second[1].numpy())
    assert not np.allclose(first[0].numpy()[order1], second[0].numpy()[order2])
    # Still normalised images of [0, 255] pixels.
    low, high = normalize(np.zeros((1, 1, 1, 3))).numpy(), normalize(np.full((1, 1, 1, 3), 255.0)).numpy()
    assert np.all(first[0].numpy() >= low.reshape(3) - 1e-4) and np.all(first[0].numpy() <= high.reshape(3) + 1e-4)


def test_linear_evaluation_crop_is_the_official_one():
    from scipy.stats import ks_2samp

    tf.random.set_seed(4)
    height, width, n = 30, 40, 4000
    # The windows `_random_resized_crop` draws for one image, n at once (same draws, ranges and law).
    windows = np.stack([np.asarray(v) for v in eval_data._crop_window(float(height), float(width), (n,))], axis=1)
    assert np.array_equal(windows, np.round(windows))
    windows = windows.astype(int)
    offset_h, offset_w, crop_h, crop_w = windows.T
    assert (crop_h >= 1).all() and (crop_w >= 1).all()
    assert (offset_h + crop_h <= height).all() and (offset_w + crop_w <= width).all() and (windows >= 0).all()
    theirs = official_crop_sizes(np.random.default_rng(0), n, height, width)
    for name, a, b in [("height", crop_h, theirs[:, 0]), ("width", crop_w, theirs[:, 1]),
                       ("area", crop_h * crop_w, theirs.prod(1))]:
        assert ks_2samp(a, b).pvalue > 1e-3, name
    # Offsets use the whole free room, both ends included.
    room = height - crop_h
    assert (offset_h[room > 10] == 0).any() and (offset_h[room > 10] == room[room > 10]).any()
    # The training transform crops with it: one image, a cropped and resized float32 square.
    image = tf.constant(np.random.default_rng(1).integers(0, 256, (height, width, 3)), tf.float32)
    out = eval_data._random_resized_crop(image, 16)
    assert out.shape == (16, 16, 3) and float(tf.reduce_min(out)) >= 0 and float(tf.reduce_max(out)) <= 255


def test_default_crop_fraction_is_the_papers_from_96_px_and_none_below():
    assert default_crop_fraction(224) == default_crop_fraction(96) == 0.875
    assert default_crop_fraction(95) == default_crop_fraction(32) == 1.0


def test_the_crop_fraction_has_one_rule_every_function_applies():
    """No function decides the crop fraction itself: each takes `crop_fraction=None` and applies
    `default_crop_fraction` of its image size (a 0.875 written into five signatures used to disagree with it
    below 96 px)."""
    import inspect

    from byol_keras import export, preprocessing, transfer
    from byol_keras.cli import finetune, linear_eval

    functions = [load_arrays, classification_dataset, preprocessing.center_crop_resize, export.preprocess_image_bytes,
                 export.preprocess_pixels, export.export_encoder, transfer.transfer, finetune.run_finetune,
                 linear_eval.run_linear_eval]
    for function in functions:
        assert inspect.signature(function).parameters["crop_fraction"].default is None, function.__name__
    # None is the rule's value at both sides of 96 px, and it is checked like any value.
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (1, 40, 60, 3)), tf.float32)
    for size in (32, 128):
        expected = preprocessing.center_crop_resize(image, size, default_crop_fraction(size))
        np.testing.assert_array_equal(preprocessing.center_crop_resize(image, size), expected)
    assert preprocessing.resolve_crop_fraction(None, 32) == 1.0 and preprocessing.resolve_crop_fraction(None, 224) == 0.875
    with pytest.raises(ValueError, match="Received: crop_fraction=1.5"):
        preprocessing.resolve_crop_fraction(1.5, 32)
