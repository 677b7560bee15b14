"""The README's code runs as written."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks():
    with open(README) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


@pytest.mark.slow
def test_readme_fit_example_runs():
    blocks = python_blocks()
    assert blocks, "the README must show a fit example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    history = namespace["history"].history
    assert {"loss", "tau", "learning_rate", "representation_std"} <= set(history)
    assert tuple(namespace["features"].shape) == (4, 576)
