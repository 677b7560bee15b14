"""Tests for byol_keras.sources: digits, image folders and TFDS opened with `load_source`; bad files skipped and
reported, in the source and in the pipelines that read it."""

import doctest
import os
import re
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from byol_keras import sources
from byol_keras.views import BYOLAugment
from byol_keras.data import pretrain_dataset
from byol_keras.decoding import DEFAULT_MAX_PIXELS, decode_image
from byol_keras.eval_data import load_arrays
from byol_keras.sources import load_source
from helpers import class_folder, flip_views, pattern, png_bomb, save_image, warnings_as_errors

CIFAR_TEST = "/work/shared/data/cifar10/test"


def test_docstring_examples_run():
    failures, tried = doctest.testmod(sources)
    assert tried >= 2
    assert failures == 0


# ------------------------------------------------------------------------------------------------
# digits


def test_digits_split_is_fixed_disjoint_and_complete():
    from sklearn.datasets import load_digits

    train = load_source("digits", split="train")
    test = load_source("digits", split="test")
    assert (train.num_examples, test.num_examples) == (1797 - sources.DIGITS_TEST_SIZE, sources.DIGITS_TEST_SIZE)
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

    again = load_source("digits", split="test")
    np.testing.assert_array_equal(again.labels, test.labels)


def test_digits_pixels_are_upsampled_nearest_rgb():
    from sklearn.datasets import load_digits

    source = load_source("digits", split="all", image_size=32)
    image, label = next(source.dataset.as_numpy_iterator())
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    first = np.random.RandomState(sources.DIGITS_SEED).permutation(1797)[0]
    digits = load_digits()
    gray = np.round(digits.images[first] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(image[..., 0], np.kron(gray, np.ones((4, 4), np.uint8)))
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    assert label == digits.target[first]
    assert image.max() == 255 or gray.max() < 255  # 16 (full ink) maps to 255


def test_digits_bad_split():
    with pytest.raises(ValueError, match="split='validation'"):
        load_source("digits", split="validation")


# ------------------------------------------------------------------------------------------------
# folders: formats and bad files


@pytest.fixture
def messy_folder(tmp_path):
    """One class folder holding every odd file the loader has to cope with."""
    root = tmp_path / "messy"
    d = str(root / "things")
    base = pattern(24, 20)
    files = {}
    files["ok.jpg"] = save_image(f"{d}/ok.jpg", base, quality=95)
    jpeg = open(files["ok.jpg"], "rb").read()
    with open(f"{d}/truncated_half.jpg", "wb") as f:
        f.write(jpeg[: len(jpeg) // 2])
    with open(f"{d}/truncated_eoi.jpg", "wb") as f:
        f.write(jpeg[:-2])  # only the end-of-image marker missing
    with open(f"{d}/notes.jpg", "w") as f:
        f.write("this is not an image\n")
    open(f"{d}/empty.png", "wb").close()
    rgba = np.dstack([base, np.arange(24 * 20, dtype=np.uint8).reshape(24, 20)])
    files["rgba.png"] = save_image(f"{d}/rgba.png", rgba)
    gray16 = (np.arange(24 * 20).reshape(24, 20) * 137 % 65536).astype(np.uint16)
    save_image(f"{d}/gray16.png", gray16)
    save_image(f"{d}/gray.png", base[..., 1])
    palette = Image.fromarray(base).convert("P")
    palette.save(f"{d}/palette.gif")
    palette.save(f"{d}/palette.bmp")
    save_image(f"{d}/rgb.BMP", base)  # upper-case extension still counts
    save_image(f"{d}/tiny.png", np.array([[[200, 100, 50]]], np.uint8))
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
        source = load_source(root, verify=True)  # every file decoded now: the damaged ones are found too
    skipped = {os.path.basename(path): reason for path, reason in source.skipped}
    assert set(skipped) == {"truncated_half.jpg", "truncated_eoi.jpg", "notes.jpg", "empty.png"}
    assert "Unknown image file format" in skipped["notes.jpg"]
    assert "empty" in skipped["empty.png"].lower()
    assert source.num_examples == 8
    assert any("notes.jpg" in str(w.message) or "truncated" in str(w.message) for w in record)


def test_folder_converts_every_readable_mode_to_rgb_uint8(messy_folder):
    root, base, gray16 = messy_folder
    with pytest.warns(UserWarning):
        source = load_source(root, verify=True)
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
        save_image(str(root / f"{i:02d}.png"), pattern(size, size, offset=i))
    (root / "bomb.png").write_bytes(png_bomb(20_000, 20_000))
    refusal = "PNG of 20000x20000 = 400000000 pixels is above the limit of 89478485 pixels (max_pixels)"
    with pytest.warns(UserWarning, match=r"Skipped 1 of 5 files .*bomb\.png: " + re.escape(refusal)):
        source = load_source(str(tmp_path / "photos"))
    assert source.num_examples == 4 and source.max_pixels == DEFAULT_MAX_PIXELS
    assert [(os.path.basename(p), reason.startswith(refusal)) for p, reason in source.skipped] == [("bomb.png", True)]
    # The limit is the source's to set: at 100 pixels the two 16 x 16 images go too.
    with pytest.warns(UserWarning, match=r"Skipped 3 of 5 files .*00\.png: PNG of 16x16 = 256 pixels is above the limit of 100"):
        assert load_source(str(tmp_path / "photos"), max_pixels=100).num_examples == 2
    # Unverified, the header alone refuses it at the scan, nothing decoded.
    with pytest.warns(UserWarning, match=r"Skipped 1 of 5 files .*bomb\.png: " + re.escape(refusal)):
        unverified = load_source(str(tmp_path / "photos"), verify=False)
    assert unverified.num_examples == 4 and unverified.image_sizes.tolist() == [[16, 16], [16, 16], [8, 8], [8, 8]]
    # A file that becomes a bomb after the scan: the pipelines meet it at read time, skip it (TensorFlow's log
    # names the file), warn and count it; its place goes to the first record again, so the declared length holds.
    (root / "bomb.png").rename(root / "00.png")
    augment = BYOLAugment(8, blur=False, seed=0)
    with pytest.warns(UserWarning, match="failed to decode when read"):
        batches = list(pretrain_dataset(unverified, augment, batch_size=1, seed=0, cache=False))  # from the files
    assert len(batches) == 4
    with pytest.warns(UserWarning, match="failed to decode when read"):
        images, labels = load_arrays(unverified, 8)  # the evaluation loader (kNN bank, linear probe)
    assert images.shape == (4, 8, 8, 3) and labels.tolist() == [0, 0, 0, 0]
    # Met at least once by each pipeline (a refill's read-ahead may meet it again), one file.
    assert unverified.met_failures.files() == [str(root / "00.png")] and len(unverified.met_failures) >= 2


def test_tensorflow_bmp_decoder_really_ignores_palettes(tmp_path):
    """Why decode_image routes palette BMPs to Pillow; fails once TF fixes it (then drop the route)."""
    base = pattern(8, 8, offset=3)
    path = str(tmp_path / "p.bmp")
    Image.fromarray(base).convert("P").save(path)
    raw_tf = tf.io.decode_bmp(tf.io.read_file(path), channels=3).numpy()
    expected = np.asarray(Image.open(path).convert("RGB"))
    assert not np.array_equal(raw_tf, expected)
    np.testing.assert_array_equal(decode_image(tf.io.read_file(path)).numpy(), expected)


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
        np.testing.assert_array_equal(decode_image(contents).numpy(), expected, err_msg=mode)
        fast = tf.io.decode_image(contents, channels=3).numpy()
        fast_differs |= not np.array_equal(fast, expected)
    assert fast_differs


def test_small_images_are_upscaled_and_counted_once(messy_folder):
    root, _, _ = messy_folder
    with pytest.warns(UserWarning):
        source = load_source(root, verify=True)
    # tiny.png (1x1) is the only image below 16 px; all 8 are below 32 px.
    with pytest.warns(UserWarning, match=r"1 of 8 images .* smaller than 16x16"):
        ds = pretrain_dataset(source, flip_views, batch_size=8, image_size=16, shuffle=False)
    v1, _, _ = next(iter(ds))
    assert v1.shape == (8, 16, 16, 3)
    names = sorted(os.listdir(os.path.join(root, "things")))
    readable = [n for n in names if n not in
                ("truncated_half.jpg", "truncated_eoi.jpg", "notes.jpg", "empty.png", "readme.txt", "._ok.jpg")]
    tiny = v1[readable.index("tiny.png")].numpy()
    np.testing.assert_allclose(tiny, np.broadcast_to([200, 100, 50], tiny.shape), atol=1)
    with warnings_as_errors():
        pretrain_dataset(source, flip_views, batch_size=8, image_size=16)  # second time: quiet
    with pytest.warns(UserWarning, match="8 of 8 images"):
        assert sources.warn_small_images(source, 32) == 8


def test_unverified_folder_drops_bad_files_at_read_time(messy_folder):
    root, _, _ = messy_folder
    # The headers alone tell a text file, an empty file and a JPEG cut before its frame header (skipped now); the
    # JPEG that only lacks its end-of-image marker has a good header.
    with pytest.warns(UserWarning, match=r"Skipped 3 of 12 files"):
        source = load_source(root, verify=False)
    assert source.num_examples == 9
    assert {os.path.basename(p) for p, _ in source.skipped} == {"notes.jpg", "empty.png", "truncated_half.jpg"}
    # The damaged JPEG is skipped when read, warned about and recorded; its place goes to the first image again, so
    # that the length the pipelines declare (what Keras' `fit` and the schedules read) holds.
    with pytest.warns(UserWarning, match="Skipped 1 image of .* that failed to decode when read"):
        images = [image for image, _ in source.dataset.as_numpy_iterator()]
    assert len(images) == 9 and source.dataset.cardinality() == 9
    np.testing.assert_array_equal(images[-1], images[0])
    assert [os.path.basename(p) for p in source.met_failures.files()] == ["truncated_eoi.jpg"]
    assert len(source.met_failures) >= 1  # the refill's read-ahead may meet it once more
    ds = pretrain_dataset(source, flip_views, batch_size=3, image_size=8, seed=0, cache=False)
    assert ds.cardinality() == 3
    with pytest.warns(UserWarning, match="failed to decode when read"):
        assert sum(1 for _ in ds) == 3
    assert len(source.met_failures) >= 2 and len(source.met_failures.files()) == 1  # met by both pipelines, one file


# ------------------------------------------------------------------------------------------------
# folders: labels, order, errors


def test_class_folders_give_sorted_labels_recursively(tmp_path):
    expected = class_folder(str(tmp_path / "classes"))
    source = load_source(str(tmp_path / "classes"))
    assert source.class_names == ("a", "b", "c") and source.num_classes == 3
    records = [(p.decode(), int(y)) for p, y in source.records.as_numpy_iterator()]
    assert dict(records) == expected  # includes b/deep/er/01.png with label 1
    assert [p for p, _ in records] == sorted(expected)  # sorted walk: a/, b/ (files, then deep/), c/
    np.testing.assert_array_equal(source.labels, [y for _, y in records])


def test_folder_split_subfolder_is_used_when_present(tmp_path):
    class_folder(str(tmp_path / "ds" / "train"), per_class=(2, 1, 1))
    class_folder(str(tmp_path / "ds" / "test"), per_class=(1, 1, 1))
    train = load_source(str(tmp_path / "ds"))  # split="train" by default
    test = load_source(str(tmp_path / "ds"), split="test")
    assert (train.num_examples, test.num_examples) == (4, 3)
    assert train.name == str(tmp_path / "ds" / "train") and train.class_names == ("a", "b", "c")
    direct = load_source(str(tmp_path / "ds" / "test"), split="train")  # no train/ inside
    assert direct.num_examples == 3


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        save_image(str(tmp_path / "flat" / f"{i}.png"), pattern(8, 8, i))
    source = load_source(str(tmp_path / "flat"))
    assert source.num_classes == 0 and source.class_names == ()
    assert [int(y) for _, y in source.dataset.as_numpy_iterator()] == [-1, -1, -1]
    with pytest.raises(ValueError, match="limit_per_class"):
        load_arrays(source, 8, limit_per_class=1)


def test_loose_files_next_to_class_folders_are_unlabelled_with_a_warning(tmp_path):
    class_folder(str(tmp_path / "mixed"), per_class=(1, 1, 1))
    save_image(str(tmp_path / "mixed" / "loose.png"), pattern(16, 16))
    with pytest.warns(UserWarning, match="label -1"):
        source = load_source(str(tmp_path / "mixed"))
    assert sorted(source.labels.tolist()) == [-1, 0, 1, 2]


def test_empty_and_unreadable_folders_are_errors_naming_the_path(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=f"No image files .* folder '{re.escape(str(empty))}'"):
        load_source(str(empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_text("not a jpeg")
    (broken / "b.png").write_bytes(b"")
    with pytest.raises(ValueError, match=f"None of the 2 image files under '{re.escape(str(broken))}'"):
        load_source(str(broken))
    with pytest.raises(ValueError, match="existing folder. Received: source='/no/such/dir'"):
        load_source("/no/such/dir")


# ------------------------------------------------------------------------------------------------
# TFDS (no network here: error paths, plus the reading path against a stand-in builder)


def test_unknown_tfds_name_lists_supported_ones():
    supported = r"TFDS name \(cifar10, cifar100, stl10, imagenette, imagenet2012\)"
    with pytest.raises(ValueError, match=supported + r".*source='mnist'"):
        load_source("mnist")
    with pytest.raises(ValueError, match=r"Unknown TFDS dataset or config 'imagenette/nope'.*cifar10"):
        load_source("imagenette/nope", data_dir="/tmp/unused")


@pytest.mark.parametrize("name", ["cifar10", "stl10", "imagenet2012"])
def test_tfds_not_prepared_fails_fast_without_downloading(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=r"not prepared.*download_and_prepare.*--data-dir") as info:
        load_source(name, data_dir=str(tmp_path))
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

    images = np.stack([pattern(12, 12, i) for i in range(8)])
    examples = {
        "train": (images[:6], np.array([2, 0, 1, 2, 0, 1], np.int64)),
        "unlabelled": (images[6:], np.array([-1, -1], np.int64)),
    }
    builder = _FakeBuilder(examples)
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: builder)
    return examples


def test_tfds_reading_path(fake_stl):
    source = load_source("stl10", split="train", data_dir="/fake")
    assert source.class_names == ("airplane", "bird", "cat") and source.num_examples == 6
    got = list(source.dataset.as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([im for im, _ in got]), fake_stl["train"][0])
    assert [int(y) for _, y in got] == [2, 0, 1, 2, 0, 1]
    unlabelled = load_source("stl10", split="unlabelled", data_dir="/fake")
    assert [int(y) for _, y in unlabelled.dataset.as_numpy_iterator()] == [-1, -1]
    # Streaming class-balanced subset: first 1 per class in order -> examples 0, 1, 2.
    images, labels = load_arrays(source, 12, limit_per_class=1, crop_fraction=1.0)
    assert labels.tolist() == [2, 0, 1]
    np.testing.assert_array_equal(images, fake_stl["train"][0][:3])
    with pytest.raises(ValueError, match=r"split='test'"):
        load_source("stl10", split="test", data_dir="/fake")


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
    source = load_source(str(tmp_path), image_size=32)  # no small-image warning at 32
    assert source.class_names == tuple(classes) and len(classes) == 10
    assert source.num_examples == 40 and source.skipped == ()
    assert np.all(source.image_sizes == 32)
    image, label = next(source.dataset.as_numpy_iterator())
    reference = np.asarray(Image.open(tmp_path / classes[0] / sorted(os.listdir(tmp_path / classes[0]))[0]))
    assert label == 0 and np.abs(image.astype(int) - reference).mean() < 2  # two JPEG decoders
    v1, v2, labels = next(iter(pretrain_dataset(source, flip_views, 16, 32, seed=0)))
    assert v1.shape == (16, 32, 32, 3) and set(labels.numpy()) <= set(range(10))
    bank, bank_labels = load_arrays(source, 32, limit_per_class=2, crop_fraction=1.0)
    assert bank.shape == (20, 32, 32, 3) and np.bincount(bank_labels).tolist() == [2] * 10


def test_a_symlink_loop_is_followed_once_and_counts_real_files(tmp_path):
    # `ln -s .. train/even/loop`: the loop leads back to train/, whose folders are already being read.
    root = tmp_path / "train"
    for label, name in enumerate(("even", "odd")):
        for i in range(2):
            save_image(str(root / name / f"{i}.png"), pattern(8, 8, 10 * label + i))
    os.symlink("..", root / "even" / "loop")
    with pytest.warns(UserWarning, match=r"1 symlink .* already read.*even/loop"):
        source = load_source(str(tmp_path))
    assert source.num_examples == 4  # the real files, each once (today: 164, odd digits labelled "even")
    assert source.class_names == ("even", "odd")
    labels = {os.path.relpath(p.decode(), root): int(y) for p, y in source.records.as_numpy_iterator()}
    assert labels == {"even/0.png": 0, "even/1.png": 0, "odd/0.png": 1, "odd/1.png": 1}


def test_symlinked_files_and_folders_are_followed_once_each(tmp_path):
    outside = tmp_path / "elsewhere"
    save_image(str(outside / "cats" / "c0.png"), pattern(8, 8, 1))
    save_image(str(outside / "cats" / "c1.png"), pattern(8, 8, 2))
    save_image(str(outside / "lone.png"), pattern(8, 8, 3))
    root = tmp_path / "data"
    save_image(str(root / "dogs" / "d0.png"), pattern(8, 8, 4))
    os.symlink(outside / "cats", root / "cats")  # a class folder that lives elsewhere: read
    os.symlink(outside / "lone.png", root / "dogs" / "d1.png")  # a file that lives elsewhere: read
    os.symlink(root / "dogs" / "d0.png", root / "dogs" / "d2.png")  # the same file again: once
    os.symlink(root / "dogs", root / "dogs" / "again")  # the same folder again: once
    with pytest.warns(UserWarning, match="2 symlinks"):
        source = load_source(str(root))
    found = {os.path.relpath(p.decode(), root): int(y) for p, y in source.records.as_numpy_iterator()}
    assert found == {"cats/c0.png": 0, "cats/c1.png": 0, "dogs/d0.png": 1, "dogs/d1.png": 1}
    unverified = load_source(str(root), verify=False)
    assert unverified.num_examples == 4


def test_a_long_folder_scan_shows_its_progress(tmp_path, monkeypatch, capsys):
    for i in range(3):
        save_image(str(tmp_path / "a" / f"{i}.png"), pattern(8, 8, i))
    monkeypatch.setattr(sources, "PROGRESS_AFTER", -1.0)  # as if the scan were slow
    monkeypatch.setattr(sources, "SCAN_BATCH", 1)
    for verify, what in ((False, "Reading the image headers (3 files)"), (True, "Decoding every image")):
        assert load_source(str(tmp_path), verify=verify).num_examples == 3
        err = capsys.readouterr().err
        assert what in err and "3/3" in err
    monkeypatch.setattr(sources, "PROGRESS_AFTER", 3.0)
    load_source(str(tmp_path))
    assert capsys.readouterr().err == ""  # a quick scan says nothing


def test_a_folder_opens_from_its_headers_by_default_without_tensorflow_per_file(messy_folder, monkeypatch):
    # `load_source(folder)` with its defaults decodes nothing and reads JPEG, PNG and BMP headers in Python. The file
    # damaged behind a good header passes the scan (its decode fails later, when a pipeline meets it); the others
    # are skipped now, with their reasons.
    root, _, _ = messy_folder
    monkeypatch.setattr(sources, "_verify_files", lambda *args: pytest.fail("decoded every file"))
    graph = []
    real = sources._graph_header_sizes
    monkeypatch.setattr(sources, "_graph_header_sizes", lambda paths, limit: graph.extend(paths) or real(paths, limit))
    with pytest.warns(UserWarning, match=r"Skipped 3 of 12 files") as record:
        source = load_source(root)
    # The GIF, and the JPEG cut before its start of scan, whose header only libjpeg can judge (it refuses it).
    assert [os.path.basename(p) for p in graph] == ["palette.gif", "truncated_half.jpg"]
    skipped = {os.path.basename(path): reason for path, reason in source.skipped}
    assert set(skipped) == {"notes.jpg", "empty.png", "truncated_half.jpg"}
    assert "Unknown image file format" in skipped["notes.jpg"]
    assert source.num_examples == 9 and source.image_sizes.tolist()[0] == [24, 20]
    assert any("notes.jpg" in str(w.message) for w in record)
