"""Shared test set-up: TensorFlow backend, quiet logs, oneDNN on as the programs run, deterministic seeds."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Before keras: importing byol_keras first turns TensorFlow's oneDNN kernels on unless TF_ENABLE_ONEDNN_OPTS
# is set (`TF_ENABLE_ONEDNN_OPTS=0 pytest` runs the suite on Eigen kernels, as an AVX2 CPU does by default).
import byol_keras  # noqa: E402, F401

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
