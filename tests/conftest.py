"""Shared test set-up: TensorFlow backend, quiet logs, oneDNN on as the programs run, deterministic seeds, and
the order pytest-xdist's workers take the tests in."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def pytest_configure(config):
    # The controller of a pytest-xdist run (`-n 2`, pytest.ini) only hands tests to its workers: it never
    # imports TensorFlow. A worker, or a run without workers (`-n 0`), imports byol_keras before anything
    # imports TensorFlow (the test modules come later): that turns TensorFlow's oneDNN kernels on unless
    # TF_ENABLE_ONEDNN_OPTS is set (`TF_ENABLE_ONEDNN_OPTS=0 pytest` runs the suite on Eigen kernels, as an
    # AVX2 CPU does by default).
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        import byol_keras  # noqa: F401


def _module_fixtures(item):
    """The names of the module-scoped fixtures that `item` uses (its own module's or a conftest's)."""
    definitions = getattr(item, "_fixtureinfo", None)
    if definitions is None:
        return set()
    return {name for name, defs in definitions.name2fixturedefs.items() if defs and defs[-1].scope == "module"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the `xdist_group` marks (tests/conftest.py runs first)
def pytest_collection_modifyitems(config, items):
    # A test that uses a module-scoped fixture (a demo run, an export, programs started once) joins its module's
    # `xdist_group`, so that under `--dist loadgroup` the fixture is made once, on one worker; the module's other
    # tests stay free to run on either worker.
    for item in items:
        if _module_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    # Under pytest-xdist the workers take tests in collection order as they free up: the slow ones first, so
    # that no long test starts near the end while the other worker has nothing left (a stable sort: the
    # order is otherwise the collection's). A run without workers keeps the collection order.
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(1234)
    yield
