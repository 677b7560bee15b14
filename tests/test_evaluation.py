"""Tests for the linear-evaluation and fine-tuning commands (byol_keras/cli/) and the evaluation functions they
call (byol_keras.embedding, knn, transfer, eval_data, subsets)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import colour_images, small_encoder


# --- the commands -------------------------------------------------------------------------------------


def test_run_linear_eval_end_to_end():
    from byol_keras.cli.linear_eval import run_linear_eval

    rng = np.random.default_rng(0)
    train, test = colour_images(rng, 16), colour_images(rng, 8)
    encoder = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.GlobalAveragePooling2D()])
    results = run_linear_eval(
        encoder, train, test, num_classes=2, image_size=12, epochs=15, batch_size=8, learning_rate=0.5, verbose=0
    )
    # Mean colour separates the classes, so a linear layer on pooled pixels must find it.
    assert results == {"top1": 1.0, "top5": 1.0}


def test_run_finetune_end_to_end_trains_encoder_on_subset():
    from byol_keras.cli.finetune import labelled_subset, run_finetune

    rng = np.random.default_rng(0)
    train, test = colour_images(rng, 20), colour_images(rng, 8)
    encoder = small_encoder()
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
    train, test = colour_images(rng, 8), colour_images(rng, 4)
    encoder_path = str(tmp_path / "encoder.keras")
    small_encoder().save(encoder_path)
    # The data module is another unit: feed arrays in its place.
    as_source = lambda data: types.SimpleNamespace(  # noqa: E731
        dataset=tf.data.Dataset.from_tensor_slices(data), num_classes=2, labels=data[1]
    )
    monkeypatch.setattr(cli, "load_eval_data", lambda *args, **kwargs: (as_source(train), as_source(test)))
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

    model = BYOL(small_encoder(8), projection_dim=4, projection_hidden_dim=8, prediction_hidden_dim=8)
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
