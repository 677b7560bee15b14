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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
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
