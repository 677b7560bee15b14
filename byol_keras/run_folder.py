"""A pretraining run's folder: what it holds, and the one way every command reads it.

`byol-pretrain` writes `config.json` (the run's resolved configuration) and `model.keras` (the saved BYOL
model) into the run folder; `byol-export`, `byol-linear-eval` and `byol-finetune` read them back through
`read_config`, `load_run` and `load_encoder`, so a missing file is the same error, naming the folder, for
every command.
"""

import json
import os

CONFIG_FILENAME = "config.json"
MODEL_FILENAME = "model.keras"


def _path(run_dir, filename):
    path = os.path.join(os.fspath(run_dir), filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`run_dir` has no {filename}. Received: run_dir={os.fspath(run_dir)!r}")
    return path


def read_config(run_dir):
    """The run's `config.json`, as written by `byol-pretrain`.

    Args:
        run_dir: str or path-like, a pretraining run folder.

    Returns:
        dict. It holds at least "image_size".

    Raises:
        FileNotFoundError: the folder has no config.json.
        ValueError: the config has no "image_size".
    """
    path = _path(run_dir, CONFIG_FILENAME)
    with open(path) as f:
        config = json.load(f)
    if "image_size" not in config:
        raise ValueError(f"{path} must contain \"image_size\". Received keys: {sorted(config)}")
    return config


def load_run(run_dir):
    """The run's config and saved model.

    Args:
        run_dir: str or path-like, a pretraining run folder holding `config.json` and `model.keras`.

    Returns:
        `(model, config)`: the loaded `keras.Model` (uncompiled: the weights are what a later step needs,
        and the optimizer need not be rebuilt) and the config dict.
    """
    config = read_config(run_dir)
    model_path = _path(run_dir, MODEL_FILENAME)
    return _load_model(model_path), config


def load_encoder(run_dir=None, encoder_path=None):
    """The online encoder of a pretraining run, or a standalone encoder file, and the run's config.

    Args:
        run_dir: str or None, a pretraining run folder (`config.json`, `model.keras`). Defaults to None.
        encoder_path: str or None, a `.keras` file holding the encoder alone; it overrides the run's
            model when both are given. Defaults to None.

    Returns:
        Tuple `(encoder, config)`: the `keras.Model` and the run's config dict (empty without a run).
    """
    if run_dir is None and encoder_path is None:
        raise ValueError("Give `run_dir` or `encoder_path`. Received: run_dir=None, encoder_path=None")
    if encoder_path is None:
        model, config = load_run(run_dir)
        return model.encoder, config
    config = read_config(run_dir) if run_dir is not None else {}
    return _load_model(encoder_path), config


def _load_model(path):
    """`keras.saving.load_model(path, compile=False)`, BYOL's classes registered first. Keras is imported here,
    not with this module: the commands read a run's folder names without TensorFlow."""
    import keras

    # Registers BYOL (and, through its imports, the encoders, heads and augmentation layers) with Keras'
    # serialisation, so that `keras.saving.load_model` can rebuild a saved run.
    from byol_keras import byol  # noqa: F401

    return keras.saving.load_model(path, compile=False)
