"""Tests for byol_keras.data: the pretraining pipeline (sources: test_sources.py; kNN arrays: test_eval_data.py)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from byol_keras import data, sources
from byol_keras.views import BYOLAugment
from byol_keras.preprocessing import center_crop_resize
from byol_keras.preprocessing import normalize
from helpers import class_folder as _class_folder
from helpers import flip_views
from helpers import pattern as _pattern
from helpers import save_image as _save
from helpers import warnings_as_errors


# ------------------------------------------------------------------------------------------------
# pretraining pipeline


def _first_epoch(ds):
    return [tuple(t.numpy() for t in batch) for batch in ds]


@pytest.mark.parametrize("cache", [True, False])
def test_pretrain_dataset_structure_and_views(tmp_path, cache):
    _class_folder(str(tmp_path / "c"), per_class=(3, 2, 4), size=20)
    source = sources.load_source(str(tmp_path / "c"))
    calls = []

    def views(images):
        calls.append(images.dtype)
        return flip_views(images)

    ds = data.pretrain_dataset(source, views, batch_size=4, image_size=12, seed=3, cache=cache)
    batches = _first_epoch(ds)
    assert len(batches) == ds.cardinality() == 9 // 4  # remainder dropped; length known to Keras
    assert calls == [tf.uint8]  # traced once, on a uint8 batch
    for v1, v2, labels in batches:
        assert v1.shape == v2.shape == (4, 12, 12, 3) and labels.shape == (4,)
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(v2, v1[:, :, ::-1])
    # Unshuffled, the first batch is the first four files, centre-cropped like the eval transform.
    v1, _, labels = next(iter(data.pretrain_dataset(source, flip_views, 4, 12, shuffle=False, cache=cache)))
    first = [image for image, _ in source.dataset.take(4).as_numpy_iterator()]
    expected = [np.round(center_crop_resize(im, 12, crop_fraction=1.0).numpy()) for im in first]
    np.testing.assert_array_equal(v1.numpy(), np.stack(expected))
    assert labels.numpy().tolist() == source.labels[:4].tolist()


@pytest.mark.parametrize("cache", [True, False])
def test_pretrain_dataset_is_deterministic_with_a_seed(cache):
    source = sources.load_source("digits", split="test", image_size=8)

    def epochs(seed, n=2):
        ds = data.pretrain_dataset(source, flip_views, batch_size=90, image_size=8, seed=seed, cache=cache)
        return [np.concatenate([b[2] for b in _first_epoch(ds)]) for _ in range(n)]

    a, b, c = epochs(7), epochs(7), epochs(8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])  # another seed, another order
    assert not np.array_equal(a[0], a[1])  # reshuffled every epoch
    # Shuffling permutes, it does not duplicate or lose examples (360 = 4 x 90, nothing dropped).
    np.testing.assert_array_equal(np.sort(a[0]), np.sort(source.labels))


def test_pretrain_dataset_identical_images_with_and_without_cache():
    source = sources.load_source("digits", split="test", image_size=16)
    runs = []
    for cache in (True, False):
        ds = data.pretrain_dataset(source, flip_views, 120, 16, shuffle=False, cache=cache)
        runs.append(np.concatenate([b[0] for b in _first_epoch(ds)]))
    np.testing.assert_array_equal(runs[0], runs[1])
    # Already 16 px: passes through untouched (no resampling).
    first = np.stack([image for image, _ in source.dataset.take(3).as_numpy_iterator()])
    np.testing.assert_array_equal(runs[0][:3], first)


def test_pretrain_dataset_trains_a_small_keras_model():
    """End to end with Keras fit: a two-view cosine loss on a tiny encoder runs and is finite."""
    import keras

    source = sources.load_source("digits", split="test", image_size=8)
    ds = data.pretrain_dataset(source, lambda x: (normalize(x), normalize(x[:, ::-1])), 60, 8, seed=0)
    ds = ds.map(lambda v1, v2, y: ((v1, v2), tf.zeros_like(y, tf.float32)))
    in1, in2 = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    encoder = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])
    cos = keras.ops.sum(keras.ops.normalize(encoder(in1)) * keras.ops.normalize(encoder(in2)), -1)
    model = keras.Model([in1, in2], 2.0 - 2.0 * cos)
    model.compile(optimizer="sgd", loss=lambda _, d: d)
    with warnings_as_errors():  # a known length: no "input ran out of data" warning from Keras
        history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2 and np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(batch_size=0), ValueError, "batch_size=0"),
        (dict(batch_size=1000), ValueError, "at most the number of examples .*batch_size=1000"),
        (dict(image_size=-1), ValueError, "image_size=-1"),
        (dict(cache="yes"), ValueError, "cache='yes'"),
        (dict(seed=1.5), TypeError, "seed=1.5"),
        (dict(views="flip"), TypeError, "views='flip'"),
        (dict(views=lambda x: x), TypeError, "must return a pair"),
    ],
)
def test_pretrain_dataset_validation(kwargs, error, message):
    source = sources.load_source("digits", split="test", image_size=8)
    args = dict(source=source, views=flip_views, batch_size=8, image_size=8) | kwargs
    with pytest.raises(error, match=message):
        data.pretrain_dataset(**args)


def test_folder_file_shuffle_is_deterministic_with_a_seed(tmp_path):
    """The uncached folder path shuffles file names before decoding; same seed, same batches."""
    for i in range(12):
        _save(str(tmp_path / "f" / f"{i:02d}.png"), _pattern(8, 8, offset=20 * i))
    source = sources.load_source(str(tmp_path / "f"))

    def epoch(seed):
        ds = data.pretrain_dataset(source, flip_views, 4, 8, seed=seed, cache=False)
        return np.concatenate([b[0] for b in _first_epoch(ds)])

    first, again, other = epoch(5), epoch(5), epoch(6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # Every file exactly once per epoch (12 = 3 x 4): identify images by their first pixel.
    assert sorted(first[:, 0, 0, 0].astype(int).tolist()) == [(20 * i) % 256 for i in range(12)]


def test_module_docstring_example_runs():
    import doctest

    result = doctest.testmod(data, verbose=False)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------------------
# Resuming the data: every batch a function of the seed and its position


def _photo_folder(root, count=10):
    """JPEGs of different sizes (so the per-image path), one class."""
    for i in range(count):
        _save(os.path.join(root, "a", f"{i:02d}.jpg"), _pattern(20 + 3 * i, 30 - i, offset=9 * i), quality=90)
    return root


def _stream(source, start_batch, count, views=True, **kwargs):
    # A new BYOLAugment each time, as a new process builds: nothing may carry over but the seed.
    augment = BYOLAugment(16, seed=3, blur=False, jit_compile=False) if views else None
    dataset = data.pretrain_dataset(source, augment, kwargs.pop("batch_size"), image_size=None if views else 16,
                                    seed=5, repeat=True, start_batch=start_batch, **kwargs)
    return [tuple(np.asarray(t) for t in batch) for batch in dataset.take(count)]


@pytest.mark.parametrize(
    "path",
    ["per image, files read every epoch", "per image, views on the device", "native size, cached",
     "squares (views=None), files read every epoch", "squares (views=None), decoded, shuffled with a buffer"],
)
def test_a_stream_started_at_batch_k_is_the_uninterrupted_stream_from_batch_k(tmp_path, path):
    """What a run resumed at global step k draws (`start_batch=k`) is what the uninterrupted run draws from step k
    on, views and all, across the data's epoch boundaries; and it is not the stream's beginning. One case per
    branch of the pipeline (what each epoch orders: file names or decoded images; how they become batches)."""
    views = not path.startswith("squares")
    if path.startswith("per image"):
        source = sources.load_source(_photo_folder(str(tmp_path / "photos")))
        kwargs = dict(batch_size=4, views_on="device" if "device" in path else "data")  # 2 batches an epoch
        start, count = 3, 4
        assert not data.native_size(source, 16)
    elif "files" in path:
        _class_folder(str(tmp_path / "c"), per_class=(4, 3, 5), size=20)
        source = sources.load_source(str(tmp_path / "c"))
        kwargs = dict(batch_size=5, cache=False)  # 2 batches an epoch
        start, count = 3, 3
    else:
        source = sources.load_source("digits", split="test", image_size=20)  # 360 images: 5 batches of 64
        kwargs = dict(batch_size=64, cache=path.endswith("cached"), shuffle_buffer=50)
        start, count = 7, 5
        assert data.native_size(source, 16)
    uninterrupted = _stream(source, 0, start + count, views, **dict(kwargs))
    resumed = _stream(source, start, count, views, **dict(kwargs))
    assert len(resumed) == count
    for i, (got, expected) in enumerate(zip(resumed, uninterrupted[start:])):
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b, err_msg=f"batch {start + i}")
    assert not np.array_equal(resumed[0][0], uninterrupted[0][0])  # a restart would replay batch 0


def test_every_epoch_of_the_stream_covers_its_images_once_in_its_own_order():
    source = sources.load_source("digits", split="test", image_size=8)
    dataset = data.pretrain_dataset(source, None, batch_size=90, image_size=8, seed=7, repeat=True)
    labels = [np.asarray(y) for _, y in dataset.take(12)]
    epochs = [np.concatenate(labels[i:i + 4]) for i in range(0, 12, 4)]  # 360 = 4 x 90: nothing dropped
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.sort(source.labels))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    with pytest.raises(ValueError, match=r"pass `repeat=True` with it. Received: start_batch=3, repeat=False"):
        data.pretrain_dataset(source, None, 90, 8, start_batch=3)
    with pytest.raises(ValueError, match=r"Received: start_batch=-1"):
        data.pretrain_dataset(source, None, 90, 8, repeat=True, start_batch=-1)


def test_views_from_keras_and_keras_cv_layers_run_in_the_pipeline_and_on_the_device():
    """Keras 3 core layers and KerasCV's RandAugment as views (issue 32): KerasCV's branch on tensors in Python,
    which the pipeline's plain graph refused (OperatorNotAllowedInGraphError); the views come out normalised."""
    import keras
    import keras_cv

    from byol_keras import BYOL
    from byol_keras.views import LayerViews
    from byol_keras.encoders import convnet

    source = sources.load_source("digits", split="train", image_size=16)
    core = [keras.layers.RandomFlip("horizontal", seed=0), keras.layers.RandomColorJitter(
        value_range=(0, 255), brightness_factor=0.4, contrast_factor=0.4, seed=1), keras.layers.RandomGrayscale(0.2, seed=2),
        keras.layers.Solarization(addition_factor=0.0, threshold_factor=(0.5, 0.5), value_range=(0, 255), seed=3)]
    randaugment = keras_cv.layers.RandAugment(value_range=(0, 255), augmentations_per_image=2, magnitude=0.5)
    views = LayerViews(core, [randaugment])
    dataset = data.pretrain_dataset(source, views, batch_size=8, image_size=16, seed=0)
    view1, view2, labels = next(iter(dataset))
    assert view1.shape == view2.shape == (8, 16, 16, 3) and view1.dtype == tf.float32
    low, high = normalize(np.array([0, 255], "uint8").reshape(1, 1, 2, 1).repeat(3, axis=-1)).numpy().reshape(2, 3)
    assert np.all(view1.numpy() >= low - 1e-5) and np.all(view2.numpy() <= high + 1e-5)
    # On the device: the model makes the views of uint8 images (the pipeline's `views=None`).
    images = data.pretrain_dataset(source, None, batch_size=8, image_size=16, seed=0).take(1)
    model = BYOL(convnet((4, 8), input_shape=(16, 16, 3)), projection_dim=8, projection_hidden_dim=16,
                 prediction_hidden_dim=16, total_steps=1, augment=LayerViews(core), augment_on="device")
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    assert np.isfinite(model.fit(images, epochs=1, verbose=0).history["loss"][0])


@pytest.mark.parametrize("size, view, path", [((32, 32), 32, "native"), ((32, 32), 96, "native"), ((64, 64), 32, "native"),
                                              ((64, 64), 96, "per_image"), ((96, 96), 96, "per_image"),
                                              ((256, 256), 224, "per_image"), ((300, 400), 224, "per_image")])
def test_the_default_path_is_the_faster_one_and_verify_does_not_change_it(tmp_path, size, view, path):
    """Same-size images up to twice the view's side took the native-size path, measured 1.2-3.3x slower from 64 px at
    96 on (400x300 at 224: 3.3x; docs/design.md, "Choosing the path"); and an unverified folder, whose sizes were
    unknown, always took the per-image path."""
    for i in range(2):
        _save(str(tmp_path / "a" / f"{i}.jpg"), _pattern(*size, offset=i))
    verified, unverified = sources.load_source(str(tmp_path), verify=True), sources.load_source(str(tmp_path))
    np.testing.assert_array_equal(unverified.image_sizes, verified.image_sizes)
    assert data.choose_path(verified, view) == data.choose_path(unverified, view) == path
    assert data.native_size(verified, view) == (path == "native")


def test_a_run_opens_its_folder_from_the_headers_alone(tmp_path, monkeypatch):
    """`byol-pretrain`'s start-up reads headers, never decodes the folder (1.4 ms a photo, 20 minutes for a million)."""
    from byol_keras import sources

    _class_folder(str(tmp_path / "c"), per_class=(2, 2, 2), size=20)

    def no_decoding(*args):
        raise AssertionError("the folder was decoded before the first step")

    monkeypatch.setattr(sources, "_verify_files", no_decoding)
    config = {"data": str(tmp_path / "c"), "train_split": "train", "data_dir": None, "max_pixels": None,
              "limit_per_class": 1}
    source = data.run_source(config)
    assert source.num_examples == 3 and source.image_sizes.tolist() == [[20, 20]] * 3
