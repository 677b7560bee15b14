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
