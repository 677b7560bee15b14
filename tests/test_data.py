"""Tests for byol_keras.data: sources, bad files, the pretraining and evaluation pipelines."""

import os
import re
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras import data
from byol_keras.augment import center_crop_resize
from byol_keras.augment import BYOLAugment
from byol_keras.augment import normalize
from helpers import png_bomb

CIFAR_TEST = "/work/shared/data/cifar10/test"


def flip_views(images):
    """A trivial, deterministic `views`: the batch and its mirror image, as float32."""
    images = tf.cast(images, tf.float32)
    return images, images[:, :, ::-1]


def _pattern(height, width, offset=0):
    """A uint8 RGB image whose pixels are all different enough to tell images apart."""
    y, x = np.mgrid[:height, :width]
    return np.stack([(x * 7 + offset) % 256, (y * 11 + offset) % 256, (x + y + offset) % 256], -1).astype(
        np.uint8
    )


def _save(path, array, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _class_folder(root, per_class=(3, 2, 4), size=16):
    """`root/<c>/...png` with a nested sub-folder in class `b`; returns {path: label}."""
    expected = {}
    for label, (name, count) in enumerate(zip("abc", per_class)):
        for i in range(count):
            sub = "deep/er" if (name == "b" and i == 1) else ""
            path = os.path.join(root, name, sub, f"{i:02d}.png")
            _save(path, _pattern(size, size, offset=10 * label + i))
            expected[path] = label
    return expected


# ------------------------------------------------------------------------------------------------
# digits


def test_digits_split_is_fixed_disjoint_and_complete():
    from sklearn.datasets import load_digits

    train = data.load_source("digits", split="train")
    test = data.load_source("digits", split="test")
    assert (train.num_examples, test.num_examples) == (1797 - data.DIGITS_TEST_SIZE, data.DIGITS_TEST_SIZE)
    assert train.num_classes == 10 and train.class_names == tuple("0123456789")

    # Identify each image by its 8x8 content (nearest upsampling: every 4th pixel) and check the
    # two splits partition the 1,797 sklearn images, with matching labels.
    digits = load_digits()
    reference = {
        np.round(img * 255 / 16).astype(np.uint8).tobytes(): label
        for img, label in zip(digits.images, digits.target)
    }
    seen = []
    for source in (train, test):
        for image, label in source.dataset.as_numpy_iterator():
            key = image[::4, ::4, 0].tobytes()
            assert reference[key] == label
            seen.append(key)
    assert len(seen) == 1797 and len(set(seen)) == len(reference)

    again = data.load_source("digits", split="test")
    np.testing.assert_array_equal(again.labels, test.labels)


def test_digits_pixels_are_upsampled_nearest_rgb():
    from sklearn.datasets import load_digits

    source = data.load_source("digits", split="all", image_size=32)
    image, label = next(source.dataset.as_numpy_iterator())
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    first = np.random.RandomState(data.DIGITS_SEED).permutation(1797)[0]
    digits = load_digits()
    gray = np.round(digits.images[first] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(image[..., 0], np.kron(gray, np.ones((4, 4), np.uint8)))
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    assert label == digits.target[first]
    assert image.max() == 255 or gray.max() < 255  # 16 (full ink) maps to 255


def test_digits_bad_split():
    with pytest.raises(ValueError, match="split='validation'"):
        data.load_source("digits", split="validation")


# ------------------------------------------------------------------------------------------------
# folders: formats and bad files


@pytest.fixture
def messy_folder(tmp_path):
    """One class folder holding every odd file the loader has to cope with."""
    root = tmp_path / "messy"
    d = str(root / "things")
    base = _pattern(24, 20)
    files = {}
    files["ok.jpg"] = _save(f"{d}/ok.jpg", base, quality=95)
    jpeg = open(files["ok.jpg"], "rb").read()
    with open(f"{d}/truncated_half.jpg", "wb") as f:
        f.write(jpeg[: len(jpeg) // 2])
    with open(f"{d}/truncated_eoi.jpg", "wb") as f:
        f.write(jpeg[:-2])  # only the end-of-image marker missing
    with open(f"{d}/notes.jpg", "w") as f:
        f.write("this is not an image\n")
    open(f"{d}/empty.png", "wb").close()
    rgba = np.dstack([base, np.arange(24 * 20, dtype=np.uint8).reshape(24, 20)])
    files["rgba.png"] = _save(f"{d}/rgba.png", rgba)
    gray16 = (np.arange(24 * 20).reshape(24, 20) * 137 % 65536).astype(np.uint16)
    _save(f"{d}/gray16.png", gray16)
    _save(f"{d}/gray.png", base[..., 1])
    palette = Image.fromarray(base).convert("P")
    palette.save(f"{d}/palette.gif")
    palette.save(f"{d}/palette.bmp")
    _save(f"{d}/rgb.BMP", base)  # upper-case extension still counts
    _save(f"{d}/tiny.png", np.array([[[200, 100, 50]]], np.uint8))
    with open(f"{d}/readme.txt", "w") as f:
        f.write("ignored: not an image extension")
    with open(f"{d}/._ok.jpg", "wb") as f:
        f.write(b"\x00\x05\x16\x07 AppleDouble")  # hidden: ignored, not reported
    return str(root), base, gray16


def _by_name(source):
    paths = [p.decode() for p, _ in source.records.as_numpy_iterator()]
    images = [image for image, _ in source.dataset.as_numpy_iterator()]
    assert len(paths) == len(images) == source.num_examples
    return {os.path.basename(p): image for p, image in zip(paths, images)}


def test_folder_skips_and_reports_unreadable_files(messy_folder):
    root, _, _ = messy_folder
    with pytest.warns(UserWarning, match=r"Skipped 4 of 12 files") as record:
        source = data.load_source(root)
    skipped = {os.path.basename(path): reason for path, reason in source.skipped}
    assert set(skipped) == {"truncated_half.jpg", "truncated_eoi.jpg", "notes.jpg", "empty.png"}
    assert "Unknown image file format" in skipped["notes.jpg"]
    assert "empty" in skipped["empty.png"].lower()
    assert source.num_examples == 8
    assert any("notes.jpg" in str(w.message) or "truncated" in str(w.message) for w in record)


def test_folder_converts_every_readable_mode_to_rgb_uint8(messy_folder):
    root, base, gray16 = messy_folder
    with pytest.warns(UserWarning):
        source = data.load_source(root)
    images = _by_name(source)
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[-1] == 3 for im in images.values())
    # Lossless formats: exact pixels.
    np.testing.assert_array_equal(images["rgba.png"], base)  # alpha dropped, not composited
    np.testing.assert_array_equal(images["rgb.BMP"], base)
    np.testing.assert_array_equal(images["gray.png"], np.repeat(base[..., 1:2], 3, -1))
    # 16-bit: the high byte (v >> 8), golden numbers from the array itself.
    np.testing.assert_array_equal(images["gray16.png"][..., 0], (gray16 >> 8).astype(np.uint8))
    np.testing.assert_array_equal(images["gray16.png"][..., 0], images["gray16.png"][..., 2])
    # Palettes expanded to the palette colours, as Pillow sees them (TF alone gets the BMP wrong).
    palette_rgb = np.asarray(Image.open(os.path.join(root, "things", "palette.gif")).convert("RGB"))
    np.testing.assert_array_equal(images["palette.gif"], palette_rgb)
    np.testing.assert_array_equal(images["palette.bmp"], palette_rgb)
    # JPEG: lossy, close to the original.
    assert np.abs(images["ok.jpg"].astype(int) - base).mean() < 4
    assert images["tiny.png"].shape == (1, 1, 3)


def test_a_decompression_bomb_in_a_folder_is_skipped_naming_the_file_size_and_limit(tmp_path):
    """A 1.2 MB PNG declaring 20,000 x 20,000 pixels among good images: refused from its header, as an
    unreadable file is (listed, counted, named), by the scan, the per-image pipeline and the evaluation loader
    alike."""
    root = tmp_path / "photos" / "a"
    for i, size in enumerate((16, 16, 8, 8)):
        _save(str(root / f"{i:02d}.png"), _pattern(size, size, offset=i))
    (root / "bomb.png").write_bytes(png_bomb(20_000, 20_000))
    refusal = "PNG of 20000x20000 = 400000000 pixels is above the limit of 89478485 pixels (max_pixels)"
    with pytest.warns(UserWarning, match=r"Skipped 1 of 5 files .*bomb\.png: " + re.escape(refusal)):
        source = data.load_source(str(tmp_path / "photos"))
    assert source.num_examples == 4 and source.max_pixels == data.DEFAULT_MAX_PIXELS
    assert [(os.path.basename(p), reason.startswith(refusal)) for p, reason in source.skipped] == [("bomb.png", True)]
    # The limit is the source's to set: at 100 pixels the two 16 x 16 images go too.
    with pytest.warns(UserWarning, match=r"Skipped 3 of 5 files .*00\.png: PNG of 16x16 = 256 pixels is above the limit of 100"):
        assert data.load_source(str(tmp_path / "photos"), max_pixels=100).num_examples == 2
    # Unverified, the pipelines meet the bomb at read time and drop it (TensorFlow's log names the file).
    unverified = data.load_source(str(tmp_path / "photos"), verify=False)
    assert unverified.num_examples == 5 and unverified.image_sizes is None
    augment = BYOLAugment(8, blur=False, seed=0)
    batches = list(data.pretrain_dataset(unverified, augment, batch_size=1, seed=0))  # per image, from the files
    assert len(batches) == 4
    images, labels = data.load_arrays(unverified, 8)  # the evaluation loader (kNN bank, linear probe)
    assert images.shape == (4, 8, 8, 3) and labels.tolist() == [0, 0, 0, 0]


def test_tensorflow_bmp_decoder_really_ignores_palettes(tmp_path):
    """Why decode_image routes palette BMPs to Pillow; fails once TF fixes it (then drop the route)."""
    base = _pattern(8, 8, offset=3)
    path = str(tmp_path / "p.bmp")
    Image.fromarray(base).convert("P").save(path)
    raw_tf = tf.io.decode_bmp(tf.io.read_file(path), channels=3).numpy()
    expected = np.asarray(Image.open(path).convert("RGB"))
    assert not np.array_equal(raw_tf, expected)
    np.testing.assert_array_equal(data.decode_image(tf.io.read_file(path)).numpy(), expected)


def test_jpeg_decodes_exactly_as_pillow(tmp_path):
    # The accurate DCT: the same pixels as Pillow (so as torchvision pipelines), for colour, grayscale
    # and CMYK JPEGs; TensorFlow's default fast DCT differs by about a level per pixel.
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (6, 6, 3)), np.ones((6, 6, 1))).astype("uint8")
    noisy = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype("uint8")
    fast_differs = False
    for mode in ("RGB", "L", "CMYK"):
        path = str(tmp_path / f"{mode}.jpg")
        Image.fromarray(noisy).convert(mode).save(path, quality=75)
        expected = np.asarray(Image.open(path).convert("RGB"))
        contents = tf.io.read_file(path)
        np.testing.assert_array_equal(data.decode_image(contents).numpy(), expected, err_msg=mode)
        fast = tf.io.decode_image(contents, channels=3).numpy()
        fast_differs |= not np.array_equal(fast, expected)
    assert fast_differs


def test_small_images_are_upscaled_and_counted_once(messy_folder):
    root, _, _ = messy_folder
    with pytest.warns(UserWarning):
        source = data.load_source(root)
    # tiny.png (1x1) is the only image below 16 px; all 8 are below 32 px.
    with pytest.warns(UserWarning, match=r"1 of 8 images .* smaller than 16x16"):
        ds = data.pretrain_dataset(source, flip_views, batch_size=8, image_size=16, shuffle=False)
    v1, _, _ = next(iter(ds))
    assert v1.shape == (8, 16, 16, 3)
    names = sorted(os.listdir(os.path.join(root, "things")))
    readable = [n for n in names if n not in
                ("truncated_half.jpg", "truncated_eoi.jpg", "notes.jpg", "empty.png", "readme.txt", "._ok.jpg")]
    tiny = v1[readable.index("tiny.png")].numpy()
    np.testing.assert_allclose(tiny, np.broadcast_to([200, 100, 50], tiny.shape), atol=1)
    with warnings_as_errors():
        data.pretrain_dataset(source, flip_views, batch_size=8, image_size=16)  # second time: quiet
    with pytest.warns(UserWarning, match="8 of 8 images"):
        assert data.warn_small_images(source, 32) == 8


class warnings_as_errors:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


def test_unverified_folder_drops_bad_files_at_read_time(messy_folder):
    root, _, _ = messy_folder
    source = data.load_source(root, verify=False)
    assert source.num_examples == 12 and source.skipped == () and source.image_sizes is None
    assert sum(1 for _ in source.dataset) == 8
    ds = data.pretrain_dataset(source, flip_views, batch_size=3, image_size=8, seed=0)
    assert ds.cardinality() == tf.data.UNKNOWN_CARDINALITY  # 12 // 3 would be a lie
    assert sum(1 for _ in ds) == 8 // 3


# ------------------------------------------------------------------------------------------------
# folders: labels, order, errors


def test_class_folders_give_sorted_labels_recursively(tmp_path):
    expected = _class_folder(str(tmp_path / "classes"))
    source = data.load_source(str(tmp_path / "classes"))
    assert source.class_names == ("a", "b", "c") and source.num_classes == 3
    records = [(p.decode(), int(y)) for p, y in source.records.as_numpy_iterator()]
    assert dict(records) == expected  # includes b/deep/er/01.png with label 1
    assert [p for p, _ in records] == sorted(expected)  # sorted walk: a/, b/ (files, then deep/), c/
    np.testing.assert_array_equal(source.labels, [y for _, y in records])


def test_folder_split_subfolder_is_used_when_present(tmp_path):
    _class_folder(str(tmp_path / "ds" / "train"), per_class=(2, 1, 1))
    _class_folder(str(tmp_path / "ds" / "test"), per_class=(1, 1, 1))
    train = data.load_source(str(tmp_path / "ds"))  # split="train" by default
    test = data.load_source(str(tmp_path / "ds"), split="test")
    assert (train.num_examples, test.num_examples) == (4, 3)
    assert train.name == str(tmp_path / "ds" / "train") and train.class_names == ("a", "b", "c")
    direct = data.load_source(str(tmp_path / "ds" / "test"), split="train")  # no train/ inside
    assert direct.num_examples == 3


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        _save(str(tmp_path / "flat" / f"{i}.png"), _pattern(8, 8, i))
    source = data.load_source(str(tmp_path / "flat"))
    assert source.num_classes == 0 and source.class_names == ()
    assert [int(y) for _, y in source.dataset.as_numpy_iterator()] == [-1, -1, -1]
    with pytest.raises(ValueError, match="limit_per_class"):
        data.load_arrays(source, 8, limit_per_class=1)


def test_loose_files_next_to_class_folders_are_unlabelled_with_a_warning(tmp_path):
    _class_folder(str(tmp_path / "mixed"), per_class=(1, 1, 1))
    _save(str(tmp_path / "mixed" / "loose.png"), _pattern(16, 16))
    with pytest.warns(UserWarning, match="label -1"):
        source = data.load_source(str(tmp_path / "mixed"))
    assert sorted(source.labels.tolist()) == [-1, 0, 1, 2]


def test_empty_and_unreadable_folders_are_errors_naming_the_path(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=f"No image files .* folder '{re.escape(str(empty))}'"):
        data.load_source(str(empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_text("not a jpeg")
    (broken / "b.png").write_bytes(b"")
    with pytest.raises(ValueError, match=f"None of the 2 image files under '{re.escape(str(broken))}'"):
        data.load_source(str(broken))
    with pytest.raises(ValueError, match="existing folder. Received: source='/no/such/dir'"):
        data.load_source("/no/such/dir")


# ------------------------------------------------------------------------------------------------
# TFDS (no network here: error paths, plus the reading path against a stand-in builder)


def test_unknown_tfds_name_lists_supported_ones():
    supported = r"TFDS name \(cifar10, cifar100, stl10, imagenette, imagenet2012\)"
    with pytest.raises(ValueError, match=supported + r".*source='mnist'"):
        data.load_source("mnist")
    with pytest.raises(ValueError, match=r"Unknown TFDS dataset or config 'imagenette/nope'.*cifar10"):
        data.load_source("imagenette/nope", data_dir="/tmp/unused")


@pytest.mark.parametrize("name", ["cifar10", "stl10", "imagenet2012"])
def test_tfds_not_prepared_fails_fast_without_downloading(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=r"not prepared.*download_and_prepare.*--data-dir") as info:
        data.load_source(name, data_dir=str(tmp_path))
    assert str(tmp_path) in str(info.value)
    if name == "imagenet2012":
        assert "downloads/manual" in str(info.value)
    # Nothing was fetched: the data dir holds no files at all.
    assert [f for _, _, files in os.walk(tmp_path) for f in files] == []


class _FakeBuilder:
    """Stands in for a prepared TFDS builder (STL-10-like: labelled train, unlabelled split)."""

    def __init__(self, examples):
        import tensorflow_datasets as tfds

        self.examples = examples
        self.info = types.SimpleNamespace(
            splits={s: types.SimpleNamespace(num_examples=len(v[1])) for s, v in examples.items()},
            features={
                "image": types.SimpleNamespace(shape=(12, 12, 3)),
                "label": tfds.features.ClassLabel(names=["airplane", "bird", "cat"]),
            },
        )

    def is_prepared(self):
        return True

    def as_dataset(self, split, shuffle_files, decoders=None):
        import tensorflow_datasets as tfds

        assert shuffle_files is False
        # byol_keras decodes TFDS images itself (the one decoder of training and serving): it must ask for
        # the stored bytes, as TFDS's image feature keeps them (PNG here).
        assert isinstance((decoders or {}).get("image"), tfds.decode.SkipDecoding)
        images, labels = self.examples[split]
        encoded = [tf.io.encode_png(image).numpy() for image in images]
        return tf.data.Dataset.from_tensor_slices({"image": encoded, "label": labels})


@pytest.fixture
def fake_stl(monkeypatch):
    import tensorflow_datasets as tfds

    images = np.stack([_pattern(12, 12, i) for i in range(8)])
    examples = {
        "train": (images[:6], np.array([2, 0, 1, 2, 0, 1], np.int64)),
        "unlabelled": (images[6:], np.array([-1, -1], np.int64)),
    }
    builder = _FakeBuilder(examples)
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: builder)
    return examples


def test_tfds_reading_path(fake_stl):
    source = data.load_source("stl10", split="train", data_dir="/fake")
    assert source.class_names == ("airplane", "bird", "cat") and source.num_examples == 6
    got = list(source.dataset.as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([im for im, _ in got]), fake_stl["train"][0])
    assert [int(y) for _, y in got] == [2, 0, 1, 2, 0, 1]
    unlabelled = data.load_source("stl10", split="unlabelled", data_dir="/fake")
    assert [int(y) for _, y in unlabelled.dataset.as_numpy_iterator()] == [-1, -1]
    # Streaming class-balanced subset: first 1 per class in order -> examples 0, 1, 2.
    images, labels = data.load_arrays(source, 12, limit_per_class=1, crop_fraction=1.0)
    assert labels.tolist() == [2, 0, 1]
    np.testing.assert_array_equal(images, fake_stl["train"][0][:3])
    with pytest.raises(ValueError, match=r"split='test'"):
        data.load_source("stl10", split="test", data_dir="/fake")


# ------------------------------------------------------------------------------------------------
# pretraining pipeline


def _first_epoch(ds):
    return [tuple(t.numpy() for t in batch) for batch in ds]


@pytest.mark.parametrize("cache", [True, False])
def test_pretrain_dataset_structure_and_views(tmp_path, cache):
    _class_folder(str(tmp_path / "c"), per_class=(3, 2, 4), size=20)
    source = data.load_source(str(tmp_path / "c"))
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
    source = data.load_source("digits", split="test", image_size=8)

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
    source = data.load_source("digits", split="test", image_size=16)
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

    source = data.load_source("digits", split="test", image_size=8)
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
    source = data.load_source("digits", split="test", image_size=8)
    args = dict(source=source, views=flip_views, batch_size=8, image_size=8) | kwargs
    with pytest.raises(error, match=message):
        data.pretrain_dataset(**args)


def test_pipelines_reject_non_sources():
    with pytest.raises(TypeError, match="source='digits'"):
        data.load_arrays("digits", 8)


# ------------------------------------------------------------------------------------------------
# evaluation pipeline and arrays


def test_load_arrays_is_the_centre_crop_of_every_example(tmp_path):
    _class_folder(str(tmp_path / "e"), per_class=(3, 2, 2), size=20)
    source = data.load_source(str(tmp_path / "e"))
    images, labels = data.load_arrays(source, image_size=14, crop_fraction=0.875)
    decoded = [im for im, _ in source.dataset.as_numpy_iterator()]
    expected = np.stack([np.round(center_crop_resize(im, 14, 0.875).numpy()) for im in decoded]).astype(np.uint8)
    np.testing.assert_array_equal(images, expected)  # every example, in order, as uint8
    np.testing.assert_array_equal(labels, source.labels)
    with pytest.raises(ValueError, match="crop_fraction=0"):
        data.load_arrays(source, 14, crop_fraction=0)


def test_keep_elements_keeps_order_and_length():
    dataset = tf.data.Dataset.from_tensor_slices((np.arange(6), np.arange(6) * 10))
    kept = data.keep_elements(dataset, [True, False, False, True, True, False])
    assert int(kept.cardinality()) == 3
    assert [(int(a), int(b)) for a, b in kept] == [(0, 0), (3, 30), (4, 40)]


def test_load_arrays_first_n_per_class(tmp_path):
    expected = _class_folder(str(tmp_path / "k"), per_class=(3, 2, 4), size=10)
    source = data.load_source(str(tmp_path / "k"))
    images, labels = data.load_arrays(source, image_size=10, limit_per_class=2, crop_fraction=1.0)
    assert images.dtype == np.uint8 and images.shape == (6, 10, 10, 3)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    paths = sorted(expected)
    first_two = [p for c in "abc" for p in [q for q in paths if f"/{c}/" in q][:2]]
    np.testing.assert_array_equal(images, np.stack([np.asarray(Image.open(p)) for p in first_two]))
    everything, all_labels = data.load_arrays(source, image_size=10, crop_fraction=1.0)
    assert len(everything) == 9 and all_labels.tolist() == source.labels.tolist()


# ------------------------------------------------------------------------------------------------
# real CIFAR-10 folder


def test_real_cifar10_folder(tmp_path):
    if not os.path.isdir(CIFAR_TEST):
        pytest.skip(f"real CIFAR-10 JPEG folder not found at {CIFAR_TEST}")
    classes = sorted(os.listdir(CIFAR_TEST))
    for name in classes:  # a few images per class, linked into a small folder
        os.makedirs(tmp_path / name)
        for filename in sorted(os.listdir(os.path.join(CIFAR_TEST, name)))[:4]:
            os.symlink(os.path.join(CIFAR_TEST, name, filename), tmp_path / name / filename)
    source = data.load_source(str(tmp_path), image_size=32)  # no small-image warning at 32
    assert source.class_names == tuple(classes) and len(classes) == 10
    assert source.num_examples == 40 and source.skipped == ()
    assert np.all(source.image_sizes == 32)
    image, label = next(source.dataset.as_numpy_iterator())
    reference = np.asarray(Image.open(tmp_path / classes[0] / sorted(os.listdir(tmp_path / classes[0]))[0]))
    assert label == 0 and np.abs(image.astype(int) - reference).mean() < 2  # two JPEG decoders
    v1, v2, labels = next(iter(data.pretrain_dataset(source, flip_views, 16, 32, seed=0)))
    assert v1.shape == (16, 32, 32, 3) and set(labels.numpy()) <= set(range(10))
    bank, bank_labels = data.load_arrays(source, 32, limit_per_class=2, crop_fraction=1.0)
    assert bank.shape == (20, 32, 32, 3) and np.bincount(bank_labels).tolist() == [2] * 10


def test_folder_file_shuffle_is_deterministic_with_a_seed(tmp_path):
    """The uncached folder path shuffles file names before decoding; same seed, same batches."""
    for i in range(12):
        _save(str(tmp_path / "f" / f"{i:02d}.png"), _pattern(8, 8, offset=20 * i))
    source = data.load_source(str(tmp_path / "f"))

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


def test_subset_per_class_keeps_the_first_records_of_each_class_in_order():
    from byol_keras.data import load_source, subset_per_class

    source = load_source("digits", split="train")
    subset = subset_per_class(source, 3)
    assert subset.num_examples == 30 and np.bincount(subset.labels).tolist() == [3] * 10
    expected = [i for i, label in enumerate(source.labels) if list(source.labels[: i + 1]).count(label) <= 3]
    np.testing.assert_array_equal(subset.labels, source.labels[expected])
    all_images = np.stack([image for image, _ in source.records.as_numpy_iterator()])
    kept = np.stack([image for image, _ in subset.records.as_numpy_iterator()])
    np.testing.assert_array_equal(kept, all_images[expected])
    with pytest.raises(ValueError, match="`limit` must be a positive integer"):
        subset_per_class(source, 0)


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
        source = data.load_source(_photo_folder(str(tmp_path / "photos")))
        kwargs = dict(batch_size=4, views_on="device" if "device" in path else "data")  # 2 batches an epoch
        start, count = 3, 4
        assert not data.native_size(source, 16)
    elif "files" in path:
        _class_folder(str(tmp_path / "c"), per_class=(4, 3, 5), size=20)
        source = data.load_source(str(tmp_path / "c"))
        kwargs = dict(batch_size=5, cache=False)  # 2 batches an epoch
        start, count = 3, 3
    else:
        source = data.load_source("digits", split="test", image_size=20)  # 360 images: 5 batches of 64
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
    source = data.load_source("digits", split="test", image_size=8)
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
