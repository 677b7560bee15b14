"""byol_keras.run_folder: a run folder is read one way by every command, with one error per missing file."""

import json

import keras
import numpy as np
import pytest

from byol_keras.byol import BYOL
from byol_keras.run_folder import load_encoder, load_run, read_config


def _encoder():
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])


def test_load_encoder_requires_a_source(tmp_path):
    with pytest.raises(ValueError, match="Give `run_dir` or `encoder_path`"):
        load_encoder()
    with pytest.raises(FileNotFoundError, match="`run_dir` has no config.json"):
        load_encoder(run_dir=str(tmp_path))


def test_every_reader_names_the_missing_file(tmp_path):
    for read in (read_config, load_run, lambda run_dir: load_encoder(run_dir)):
        with pytest.raises(FileNotFoundError, match=r"`run_dir` has no config.json. Received: run_dir="):
            read(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(ValueError, match='must contain "image_size"'):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"image_size": 8}))
    assert read_config(tmp_path) == {"image_size": 8}
    for read in (load_run, lambda run_dir: load_encoder(run_dir)):
        with pytest.raises(FileNotFoundError, match="`run_dir` has no model.keras"):
            read(tmp_path)


def test_load_run_and_load_encoder_read_the_saved_model(tmp_path):
    model = BYOL(_encoder(), projection_dim=4, projection_hidden_dim=8, prediction_hidden_dim=8)
    model.save(str(tmp_path / "model.keras"))
    (tmp_path / "config.json").write_text(json.dumps({"image_size": 8, "crop_fraction": 1.0}))
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    loaded, config = load_run(tmp_path)
    assert isinstance(loaded, BYOL) and config == {"image_size": 8, "crop_fraction": 1.0}
    encoder, same_config = load_encoder(str(tmp_path))
    assert same_config == config
    np.testing.assert_allclose(encoder(images), model.encoder(images), atol=1e-6)
    # A standalone encoder file overrides the run's model; the run's config still comes with it.
    other = _encoder()
    other.save(str(tmp_path / "other.keras"))
    encoder, same_config = load_encoder(str(tmp_path), str(tmp_path / "other.keras"))
    assert same_config == config
    np.testing.assert_allclose(encoder(images), other(images), atol=1e-6)
    encoder, no_config = load_encoder(encoder_path=str(tmp_path / "other.keras"))
    assert no_config == {}
