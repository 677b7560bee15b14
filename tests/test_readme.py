"""The README's code runs as written."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks():
    with open(README) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


@pytest.mark.slow
def test_readme_fit_example_runs(monkeypatch):
    # The step as the README's reader gets it with oneDNN on, which `import byol_keras` first gives every x86 CPU (and
    # conftest gives this process): XLA off. Under `TF_ENABLE_ONEDNN_OPTS=0` "auto" would compile MobileNetV3 with
    # XLA (33 of the example's 35 s); XLA's step is tested with the demo's run and in tests/test_fast_paths.py.
    from byol_keras import distribute

    monkeypatch.setattr(distribute, "_onednn_enabled", lambda: True)
    blocks = python_blocks()
    assert blocks, "the README must show a fit example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    history = namespace["history"].history
    assert {"loss", "tau", "learning_rate", "representation_std"} <= set(history)
    assert tuple(namespace["features"].shape) == (4, 576)


def bring_your_own_blocks():
    with open(README) as f:
        text = f.read()
    section = text[text.index("## Bring your own"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.slow
def test_readme_bring_your_own_snippets_run(tmp_path, monkeypatch):
    """Each snippet of "Bring your own" (issue 32), in a fresh namespace, in a folder holding a small run."""
    import keras

    from byol_keras import BYOL, distribute
    from byol_keras.encoders import convnet

    monkeypatch.setattr(distribute, "_onednn_enabled", lambda: True)  # as test_readme_fit_example_runs
    monkeypatch.chdir(tmp_path)
    # "runs/demo" as byol-pretrain leaves it, as far as load_encoder reads it: config.json and model.keras.
    model = BYOL(convnet((4, 8), input_shape=(16, 16, 3)), projection_dim=8, projection_hidden_dim=16,
                 prediction_hidden_dim=16)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    model.save(tmp_path / "runs" / "demo" / "model.keras")
    (tmp_path / "runs" / "demo" / "config.json").write_text('{"image_size": 16}')
    blocks = bring_your_own_blocks()
    assert len(blocks) == 4, "encoder, views, channels, downstream"
    namespaces = []
    for block in blocks:
        namespaces.append({})
        exec(compile(block, "README.md", "exec"), namespaces[-1])  # noqa: S102 - our own README
    encoder, views, channels, downstream = namespaces
    assert encoder["encoder"].output_shape == (None, 512) and encoder["model"].encoder is encoder["encoder"]
    assert tuple(views["view1"].shape) == (64, 32, 32, 3)
    assert (tmp_path / "saved_models" / "scans" / "1" / "saved_model.pb").is_file()
    assert "loss" in downstream["classifier"].history.history
    assert not any(w.trainable for w in downstream["encoder"].weights) and keras.Model
