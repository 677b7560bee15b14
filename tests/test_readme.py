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
    """Each snippet of "Bring your own", in a fresh namespace, in a folder holding a small run."""
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


def test_readme_is_a_manual():
    """At most 10 KB, and no team's notes: no dated lines, no issue numbers, no placeholder for the repository."""
    with open(README, "rb") as f:
        raw = f.read()
    text = raw.decode()
    assert len(raw) <= 10 * 1024, f"README.md is {len(raw)} bytes"
    assert not re.findall(r"\b20\d\d-\d\d-\d\d\b", text), "dates belong in docs/results.md and CHANGELOG.md"
    assert not re.findall(r"\bissues? \d+", text), "issue numbers belong in CHANGELOG.md"
    assert "OWNER" not in text


# The README's command lines, as `python -m training.X` or the console command `byol-x` runs them.
COMMANDS = {"training.pretrain": "pretrain", "training.linear_eval": "linear_eval", "training.finetune": "finetune",
            "training.export": "export", "byol-pretrain": "pretrain", "byol-linear-eval": "linear_eval",
            "byol-finetune": "finetune", "byol-export": "export"}


def readme_command_lines():
    """(module name, argument list) for every call of one of our commands in the README's bash blocks."""
    import shlex

    with open(README) as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), flags=re.S)
    calls = []
    for line in "\n".join(blocks).splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            for i, word in enumerate(words):
                name = words[i + 1] if word == "-m" and i + 1 < len(words) else word
                if name in COMMANDS:
                    calls.append((COMMANDS[name], words[i + (2 if word == "-m" else 1):]))
                    break
    return calls


def test_every_command_in_the_readme_parses(tmp_path, monkeypatch):
    """Each command line of the README is accepted by that command's own parser (flags and values), its folders
    made first under a temporary directory (the parsers check that the inputs exist)."""
    import importlib

    monkeypatch.chdir(tmp_path)
    calls = readme_command_lines()
    assert {name for name, _ in calls} == {"pretrain", "linear_eval", "finetune", "export"}, calls
    for name, argv in calls:
        argv = [str(tmp_path / word.lstrip("/")) if "/" in word and not word.startswith("-") else word for word in argv]
        for word in argv:
            if word.startswith(str(tmp_path)) and not word.endswith(".json"):
                os.makedirs(word, exist_ok=True)
        parser = importlib.import_module(f"byol_keras.cli.{name}").build_parser()
        try:
            parser.parse_args(argv)
        except SystemExit as error:
            raise AssertionError(f"README: {name} {' '.join(argv)} is refused by its parser") from error
    with pytest.raises(AssertionError, match="refused"):  # the check itself: a flag no command has
        for name, argv in [("pretrain", ["--preset", "demo", "--no-such-flag"])]:
            try:
                importlib.import_module(f"byol_keras.cli.{name}").build_parser().parse_args(argv)
            except SystemExit as error:
                raise AssertionError("refused") from error
