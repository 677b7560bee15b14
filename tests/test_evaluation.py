"""Tests for byol_keras.evaluation and the linear-evaluation and fine-tuning commands (byol_keras/cli/)."""

import doctest
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras import evaluation
from byol_keras.augment import center_crop_resize, normalize
from byol_keras.evaluation import (
    balanced_subset,
    classification_dataset,
    classifier_on_encoder,
    embed,
    embed_labelled,
    knn_accuracy,
    knn_predict,
    knn_votes,
    linear_probe,
)
from helpers import official_crop_sizes

CIFAR10 = "/work/shared/data/cifar10"


def test_docstring_examples_run():
    failures, tried = doctest.testmod(evaluation, extraglobs={"np": np, "keras": keras})
    assert tried >= 5
    assert failures == 0


# --- kNN -------------------------------------------------------------------------------------------

# Bank: e1 (class 0), e2 (class 1), (1, 1) (class 1). Query e1 has cosine 1, 0 and 1/√2 with them.
BANK = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype="float32")
BANK_LABELS = np.array([0, 1, 1])


def test_knn_votes_golden_weights_with_k_larger_than_bank():
    votes = np.asarray(knn_votes(BANK, BANK_LABELS, [[1.0, 0.0]], num_classes=3, k=10, temperature=0.5))
    # exp(1 / 0.5) for class 0; exp(0 / 0.5) + exp((1/√2) / 0.5) for class 1; nothing for class 2.
    expected = [math.exp(2.0), 1.0 + math.exp(math.sqrt(2.0)), 0.0]
    np.testing.assert_allclose(votes, [expected], rtol=1e-5)
    np.testing.assert_allclose(votes[0], [7.389056, 5.113250, 0.0], rtol=1e-5)


def test_knn_votes_only_top_k_vote():
    votes = np.asarray(knn_votes(BANK, BANK_LABELS, [[1.0, 0.0]], num_classes=2, k=2, temperature=0.5))
    # The orthogonal bank row (similarity 0) is the third neighbour and drops out.
    np.testing.assert_allclose(votes, [[math.exp(2.0), math.exp(math.sqrt(2.0))]], rtol=1e-5)


def test_knn_votes_are_invariant_to_feature_scale():
    scaled = knn_votes(BANK * [[3.0], [0.5], [7.0]], BANK_LABELS, [[4.0, 0.0]], 2, k=3, temperature=0.5)
    np.testing.assert_allclose(scaled, knn_votes(BANK, BANK_LABELS, [[1.0, 0.0]], 2, k=3, temperature=0.5))


def test_knn_predict_known_answer():
    # Query (0, 1): class 1 gets exp(2) + exp(√2) against class 0's exp(0); query (1, -0.1) is nearest e1.
    predictions = knn_predict(BANK, BANK_LABELS, [[0.0, 1.0], [1.0, -0.1]], num_classes=2, k=10, temperature=0.5)
    np.testing.assert_array_equal(np.asarray(predictions), [1, 0])
    # With k=1 the first query's only neighbour is e2 (class 1); with k=3, votes decide the same way.
    np.testing.assert_array_equal(np.asarray(knn_predict(BANK, BANK_LABELS, [[0.6, 0.5]], 2, k=1)), [1])
    np.testing.assert_array_equal(np.asarray(knn_predict(BANK, [0, 1, 0], [[0.6, 0.5]], 2, k=1)), [0])


def test_knn_weighting_beats_majority():
    # Two far class-0 neighbours against one very close class-1 neighbour: plain majority says 0, the
    # exp(sim / 0.1) weights say 1 (exp(10) > 2·exp(0.5·10)).
    bank = np.array([[1.0, 0.0], [0.5, math.sqrt(0.75)], [0.5, -math.sqrt(0.75)]], "float32")
    predictions = knn_predict(bank, [1, 0, 0], [[1.0, 0.0]], num_classes=2, k=3, temperature=0.1)
    assert int(predictions[0]) == 1
    predictions = knn_predict(bank, [1, 0, 0], [[1.0, 0.0]], num_classes=2, k=3, temperature=100.0)
    assert int(predictions[0]) == 0


def test_knn_predict_batched_equals_argmax_of_votes():
    rng = np.random.default_rng(0)
    bank, labels = rng.normal(size=(40, 6)), rng.integers(0, 4, size=40)
    queries = rng.normal(size=(11, 6))
    expected = np.argmax(np.asarray(knn_votes(bank, labels, queries, 4, k=7, temperature=0.2)), axis=-1)
    for batch_size in (1, 3, 11, 64):
        predictions = knn_predict(bank, labels, queries, 4, k=7, temperature=0.2, batch_size=batch_size)
        np.testing.assert_array_equal(np.asarray(predictions), expected)


def test_knn_predict_small_temperature_stays_finite():
    # exp(1 / 0.005) overflows float32: the raw votes are inf, the stabilised prediction is still right.
    assert np.isinf(np.asarray(knn_votes(BANK, BANK_LABELS, [[1.0, 0.0]], 2, k=3, temperature=0.005))).any()
    predictions = knn_predict(BANK, BANK_LABELS, [[1.0, 0.0], [0.0, 1.0]], 2, k=3, temperature=0.005)
    np.testing.assert_array_equal(np.asarray(predictions), [0, 1])


def test_knn_predict_self_retrieval_is_perfect():
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(30, 16))
    labels = rng.integers(0, 5, size=30)
    predictions = knn_predict(bank, labels, bank, num_classes=5, k=1)
    np.testing.assert_array_equal(np.asarray(predictions), labels)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "`k` must be a positive integer"),
        ({"temperature": 0.0}, "`temperature` must be a positive number"),
        ({"num_classes": 0}, "`num_classes` must be a positive integer"),
        ({"query_features": np.zeros((2, 3))}, "`query_features` must be a 2D array"),
        ({"bank_labels": np.zeros(2)}, "`bank_labels` must have shape \\(3,\\)"),
        ({"batch_size": 0}, "`batch_size` must be a positive integer"),
    ],
)
def test_knn_predict_rejects_bad_arguments(kwargs, message):
    arguments = dict(
        bank_features=BANK, bank_labels=BANK_LABELS, query_features=np.zeros((2, 2)), num_classes=2
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        knn_predict(**arguments)


# --- embedding and kNN accuracy through an encoder --------------------------------------------------


def _pooling_encoder(size=4):
    return keras.Sequential([keras.Input((size, size, 3)), keras.layers.GlobalAveragePooling2D()])


def _signed_images():
    """Images whose pooled features point along +(1,1,1) for class 0 and -(1,1,1) for class 1."""
    values = [1.0, 2.0, 3.0, -1.0, -2.0, -3.0]
    images = np.stack([np.full((4, 4, 3), v, "float32") for v in values])
    return images, np.array([0, 0, 0, 1, 1, 1])


def test_embed_uses_inference_mode():
    encoder = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.BatchNormalization()]
    )
    images = np.random.default_rng(0).normal(size=(5, 4, 4, 3)).astype("float32")
    features = embed(encoder, images, batch_size=2)
    # Fresh moving statistics (mean 0, variance 1): inference mode only divides by sqrt(1 + epsilon);
    # training mode would standardise each batch instead.
    np.testing.assert_allclose(features, images.mean(axis=(1, 2)) / math.sqrt(1 + 1e-3), rtol=1e-5)
    assert features.dtype == np.float32 and features.shape == (5, 3)


def test_embed_accepts_arrays_and_datasets_alike():
    encoder = _pooling_encoder()
    images, labels = _signed_images()
    expected = images.mean(axis=(1, 2))
    np.testing.assert_allclose(embed(encoder, images, batch_size=4), expected, rtol=1e-6)
    unbatched = tf.data.Dataset.from_tensor_slices(images)
    np.testing.assert_allclose(embed(encoder, unbatched, batch_size=4), expected, rtol=1e-6)
    labelled = tf.data.Dataset.from_tensor_slices((images, labels)).batch(5)
    np.testing.assert_allclose(embed(encoder, labelled), expected, rtol=1e-6)


def test_embed_labelled_keeps_pairs_aligned_under_shuffling():
    encoder = _pooling_encoder()
    images = np.stack([np.full((4, 4, 3), i, "float32") for i in range(10)])
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(10))).shuffle(10, seed=3)
    features, labels = embed_labelled(encoder, dataset, batch_size=3)
    np.testing.assert_allclose(features[:, 0], labels.astype("float32"))
    assert sorted(labels.tolist()) == list(range(10)) and labels.tolist() != list(range(10))


def test_knn_accuracy_known_answers():
    encoder = _pooling_encoder()
    images, labels = _signed_images()
    assert knn_accuracy(encoder, (images, labels), (images, labels), k=3) == 1.0
    # Negated queries point the other way: every prediction is the other class.
    assert knn_accuracy(encoder, (images, labels), (-images, labels), k=3) == 0.0
    # Queries 0, 4 and 5 carry the wrong label: exactly half are right.
    assert knn_accuracy(encoder, (images, labels), (images, [1, 0, 0, 1, 0, 0]), k=200) == pytest.approx(0.5)


def test_knn_accuracy_same_for_arrays_and_datasets():
    rng = np.random.default_rng(2)
    encoder = _pooling_encoder()
    bank = (rng.normal(size=(24, 4, 4, 3)).astype("float32"), rng.integers(0, 3, 24))
    queries = (rng.normal(size=(12, 4, 4, 3)).astype("float32"), rng.integers(0, 3, 12))
    from_arrays = knn_accuracy(encoder, bank, queries, k=5, batch_size=5)
    from_datasets = knn_accuracy(
        encoder,
        tf.data.Dataset.from_tensor_slices(bank),
        tf.data.Dataset.from_tensor_slices(queries).batch(7),
        k=5,
        batch_size=5,
    )
    assert from_arrays == from_datasets
    assert 0.0 <= from_arrays <= 1.0


def test_embed_rejects_unlabelled_pairs():
    with pytest.raises(TypeError, match="`data` must be an `\\(images, labels\\)` tuple"):
        embed_labelled(_pooling_encoder(), np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="len\\(images\\)=2, len\\(labels\\)=3"):
        embed_labelled(_pooling_encoder(), (np.zeros((2, 4, 4, 3)), [0, 1, 2]))


# --- linear probe -----------------------------------------------------------------------------------


def _blobs(rng, per_class, num_classes=3, dim=8):
    centres = rng.normal(size=(num_classes, dim)) * 5.0
    labels = np.repeat(np.arange(num_classes), per_class)
    features = centres[labels] + rng.normal(size=(len(labels), dim)) * 0.3
    return features.astype("float32"), labels


def test_linear_probe_separates_separable_features():
    rng = np.random.default_rng(0)
    train_x, train_y = _blobs(rng, 20)
    test_x, test_y = train_x[::2] + rng.normal(size=train_x[::2].shape).astype("float32") * 0.1, train_y[::2]
    results = linear_probe(train_x, train_y, test_x, test_y, num_classes=3, epochs=8, batch_size=16)
    assert results == {"top1": 1.0, "top5": 1.0}


def test_linear_probe_cannot_predict_shuffled_labels():
    # The property that makes the test above meaningful: accuracy falls to chance when the test labels
    # carry no information about the features.
    rng = np.random.default_rng(0)
    train_x, train_y = _blobs(rng, 20)
    test_y = rng.permutation(train_y)
    results = linear_probe(train_x, train_y, train_x, test_y, num_classes=3, epochs=8, batch_size=16)
    assert results["top1"] < 0.6


def test_linear_probe_validates_shapes():
    with pytest.raises(ValueError, match="same length"):
        linear_probe(np.zeros((4, 2)), [0, 1, 0], np.zeros((2, 2)), [0, 1], num_classes=2, epochs=1)
    with pytest.raises(ValueError, match="`epochs` must be a positive integer. Received: epochs=0"):
        linear_probe(np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((2, 2)), [0, 1], num_classes=2, epochs=0)


# --- balanced subsets -------------------------------------------------------------------------------


def test_balanced_subset_is_balanced_and_deterministic():
    labels = np.repeat(np.arange(10), 100)
    np.random.default_rng(0).shuffle(labels)
    indices = balanced_subset(labels, fraction=0.1, seed=7)
    assert len(indices) == 100 and len(np.unique(indices)) == 100
    np.testing.assert_array_equal(np.bincount(labels[indices], minlength=10), [10] * 10)
    np.testing.assert_array_equal(indices, balanced_subset(labels, fraction=0.1, seed=7))
    assert np.all(np.diff(indices) > 0)


def test_balanced_subset_seeds_differ():
    labels = np.repeat(np.arange(10), 100)
    first, second = balanced_subset(labels, 0.1, seed=0), balanced_subset(labels, 0.1, seed=1)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(np.bincount(labels[second]), np.bincount(labels[first]))


def test_balanced_subset_keeps_at_least_one_per_class():
    labels = np.repeat(np.arange(5), [50, 30, 10, 3, 1])
    indices = balanced_subset(labels, fraction=0.01, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[indices]), [1, 1, 1, 1, 1])
    # 10 % of 94 over 5 classes is 2 per class; the class with one example gives what it has.
    indices = balanced_subset(labels, fraction=0.1, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[indices]), [2, 2, 2, 2, 1])


def test_balanced_subset_full_fraction_is_everything_when_balanced():
    labels = np.repeat(np.arange(3), 4)
    np.testing.assert_array_equal(balanced_subset(labels, 1.0, seed=5), np.arange(12))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_balanced_subset_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=f"`fraction` must be a number in \\(0, 1\\]. Received: fraction={fraction}"):
        balanced_subset([0, 1], fraction, seed=0)


def test_balanced_subset_rejects_non_integer_seed():
    with pytest.raises(TypeError, match="`seed` must be an integer. Received: seed=0.5"):
        balanced_subset([0, 1], 0.5, seed=0.5)


# --- the supervised pipeline and the entry points ---------------------------------------------------


def _colour_images(rng, per_class, size=12):
    """Class 0 red-ish, class 1 blue-ish uint8 images: separable by their mean colour."""
    labels = np.repeat([0, 1], per_class)
    base = np.where(labels[:, None] == 0, [[200, 40, 40]], [[40, 40, 200]])
    noise = rng.integers(-30, 30, size=(len(labels), size, size, 3))
    images = np.clip(base[:, None, None, :] + noise, 0, 255).astype("uint8")
    return images, labels


def test_classification_dataset_test_transform_matches_augment():
    rng = np.random.default_rng(0)
    images, labels = _colour_images(rng, 3, size=12)
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


def _small_encoder(size=12):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs, name="small_encoder")


def test_linear_classifier_freezes_encoder_and_batchnorm():
    encoder = _small_encoder()
    before = [w.numpy().copy() for w in encoder.weights]  # includes BN moving statistics
    classifier = classifier_on_encoder(encoder, num_classes=2, freeze=True, image_size=12)
    assert [w.path for w in classifier.trainable_weights] == ["classifier/kernel", "classifier/bias"]
    rng = np.random.default_rng(0)
    dataset = classification_dataset(_colour_images(rng, 4), 12, 4, training=True)
    evaluation.train_classifier(classifier, dataset, epochs=1, learning_rate=0.1, verbose=0)
    for old, new in zip(before, encoder.weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_run_linear_eval_end_to_end():
    from byol_keras.cli.linear_eval import run_linear_eval

    rng = np.random.default_rng(0)
    train, test = _colour_images(rng, 16), _colour_images(rng, 8)
    encoder = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.GlobalAveragePooling2D()])
    results = run_linear_eval(
        encoder, train, test, num_classes=2, image_size=12, epochs=15, batch_size=8, learning_rate=0.5, verbose=0
    )
    # Mean colour separates the classes, so a linear layer on pooled pixels must find it.
    assert results == {"top1": 1.0, "top5": 1.0}


def test_run_finetune_end_to_end_trains_encoder_on_subset():
    from byol_keras.cli.finetune import labelled_subset, run_finetune

    rng = np.random.default_rng(0)
    train, test = _colour_images(rng, 20), _colour_images(rng, 8)
    encoder = _small_encoder()
    before = [w.numpy().copy() for w in encoder.trainable_weights]
    results = run_finetune(
        encoder, train, test, num_classes=2, image_size=12, fraction=0.5, seed=0,
        epochs=10, batch_size=8, learning_rate=0.1, verbose=0,
    )
    assert results["num_labelled"] == 20
    assert results["top1"] >= 0.9 and results["top5"] == 1.0
    assert any(not np.allclose(old, new.numpy()) for old, new in zip(before, encoder.trainable_weights))
    # The subset is the same whether the training set comes as arrays or as a dataset.
    (images, labels), indices = labelled_subset(train, 0.1, seed=3)
    subset, dataset_indices = labelled_subset(tf.data.Dataset.from_tensor_slices(train), 0.1, seed=3)
    np.testing.assert_array_equal(indices, dataset_indices)
    np.testing.assert_array_equal(np.stack([x.numpy() for x, _ in subset]), images)


def test_linear_eval_cli_on_a_saved_encoder(tmp_path, monkeypatch):
    import types

    import byol_keras.cli.linear_eval as linear_eval
    from byol_keras import cli

    rng = np.random.default_rng(0)
    train, test = _colour_images(rng, 8), _colour_images(rng, 4)
    encoder_path = str(tmp_path / "encoder.keras")
    _small_encoder().save(encoder_path)
    # The data module is another unit: feed arrays in its place.
    as_source = lambda data: types.SimpleNamespace(  # noqa: E731
        dataset=tf.data.Dataset.from_tensor_slices(data), num_classes=2, labels=data[1]
    )
    monkeypatch.setattr(cli, "load_eval_data", lambda *args: (as_source(train), as_source(test)))
    out = tmp_path / "results.json"
    results = linear_eval.main(
        ["--encoder", encoder_path, "--image-size", "12", "--data", "digits", "--epochs", "1",
         "--batch-size", "8", "--out", str(out)]
    )
    written = json.loads(out.read_text())
    assert written["top1"] == results["top1"] and 0.0 <= written["top1"] <= 1.0
    assert written["protocol"] == "linear" and written["epochs"] == 1


@pytest.mark.slow
def test_clis_on_a_saved_byol_run_with_digits(tmp_path):
    import byol_keras.cli.finetune as finetune
    import byol_keras.cli.linear_eval as linear_eval
    from byol_keras.byol import BYOL

    model = BYOL(_small_encoder(8), projection_dim=4, projection_hidden_dim=8, prediction_hidden_dim=8)
    model.save(str(tmp_path / "model.keras"))
    (tmp_path / "config.json").write_text(json.dumps({"image_size": 8}))
    common = ["--data", "digits", "--epochs", "1", "--batch-size", "256"]
    linear = linear_eval.main([str(tmp_path)] + common)
    assert json.loads((tmp_path / "linear_eval.json").read_text())["top1"] == linear["top1"]
    tuned = finetune.main([str(tmp_path), "--fraction", "0.1", "--seed", "1"] + common)
    assert tuned["num_labelled"] == 140  # round(0.1 * 1437 / 10) = 14 per class
    assert json.loads((tmp_path / "finetune_10pct.json").read_text())["top1"] == tuned["top1"]
    # Plumbing only (a random 4-feature encoder and one epoch sit at chance); the learning itself is
    # checked by the run_linear_eval / run_finetune tests above.
    for results in (linear, tuned):
        assert 0.0 <= results["top1"] <= results["top5"] <= 1.0


def test_load_eval_data_finds_folder_splits(tmp_path):
    from PIL import Image

    from byol_keras.cli import load_eval_data

    for split, count in (("train", 3), ("val", 2)):
        for name in ("ant", "bee"):
            os.makedirs(tmp_path / split / name)
            for i in range(count):
                Image.fromarray(np.full((5, 5, 3), 50 * i, "uint8")).save(tmp_path / split / name / f"{i}.png")
    train, test = load_eval_data(str(tmp_path))
    assert (train.num_examples, test.num_examples, train.num_classes) == (6, 4, 2)
    assert test.name.endswith("val")
    with pytest.raises(ValueError, match="needs `train/` and `test/`"):
        load_eval_data(str(tmp_path / "train"))


@pytest.mark.slow
def test_knn_accuracy_on_real_cifar10_pixels():
    if not os.path.isdir(os.path.join(CIFAR10, "train")):
        pytest.skip(f"CIFAR-10 JPEG folders not found at {CIFAR10}")
    from PIL import Image

    def load(split, per_class):
        images, labels = [], []
        classes = sorted(os.listdir(os.path.join(CIFAR10, split)))
        for label, name in enumerate(classes):
            folder = os.path.join(CIFAR10, split, name)
            for file in sorted(os.listdir(folder))[:per_class]:
                images.append(np.asarray(Image.open(os.path.join(folder, file)).convert("RGB")))
                labels.append(label)
        return normalize(np.stack(images)).numpy(), np.array(labels)

    # Raw downsampled pixels as features: a known, modest kNN baseline (well above the 10 % of chance).
    encoder = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.AveragePooling2D(4), keras.layers.Flatten()])
    accuracy = knn_accuracy(encoder, load("train", 100), load("test", 20), k=20)
    assert 0.15 < accuracy < 0.6


def test_linear_evaluation_crop_is_the_official_one():
    from scipy.stats import ks_2samp

    tf.random.set_seed(4)
    height, width, n = 30, 40, 4000
    # The windows `_random_resized_crop` draws for one image, n at once (same draws, ranges and law).
    windows = np.stack([np.asarray(v) for v in evaluation._crop_window(float(height), float(width), (n,))], axis=1)
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
    out = evaluation._random_resized_crop(image, 16)
    assert out.shape == (16, 16, 3) and float(tf.reduce_min(out)) >= 0 and float(tf.reduce_max(out)) <= 255
