"""Tests for byol_keras.schedules: end points, golden values, properties, serialisation, bad arguments."""

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras import schedules
from byol_keras.schedules import WarmupCosine, scale_learning_rate, target_tau, warmup_cosine


def _numpy_tau(k, K, base):
    # Independent reference: the paper's formula, written with numpy in float64.
    k = np.clip(np.asarray(k, np.float64), 0, K)
    return 1.0 - (1.0 - base) * (np.cos(np.pi * k / K) + 1.0) / 2.0


def _numpy_warmup_cosine(k, base, W, T):
    k = np.asarray(k, np.float64)
    warm = base * k / max(W, 1)
    t = np.clip(k - W, 0, T - W)
    cos = base * (np.cos(np.pi * t / (T - W)) + 1.0) / 2.0
    return np.where(k < W, warm, cos)


# --- target_tau --------------------------------------------------------------------------------------


def test_target_tau_end_points_and_midpoint():
    base, K = 0.996, 1000
    assert float(target_tau(0, K, base)) == pytest.approx(0.996, abs=1e-7)
    assert float(target_tau(K, K, base)) == pytest.approx(1.0, abs=1e-7)
    # cos(π/2) = 0, so τ = 1 − (1 − 0.996)/2 = 0.998.
    assert float(target_tau(K // 2, K, base)) == pytest.approx(0.998, abs=1e-7)
    # A quarter of the way: 1 − 0.004·(cos(π/4) + 1)/2 = 1 − 0.004·0.853553… = 0.9965857864…
    assert float(target_tau(250, K, base)) == pytest.approx(0.99658578643, abs=1e-7)


def test_target_tau_is_clamped_outside_zero_to_total():
    assert float(target_tau(1001, 1000, 0.99)) == pytest.approx(1.0, abs=1e-7)
    assert float(target_tau(10**6, 1000, 0.99)) == pytest.approx(1.0, abs=1e-7)
    assert float(target_tau(-5, 1000, 0.99)) == pytest.approx(0.99, abs=1e-7)


def test_target_tau_matches_formula_and_is_monotone():
    steps = np.arange(-3, 130)
    tau = keras.ops.convert_to_numpy(target_tau(steps, 120, 0.97))
    np.testing.assert_allclose(tau, _numpy_tau(steps, 120, 0.97), atol=1e-6)
    assert np.all(np.diff(tau) >= 0.0)
    assert tau.min() == pytest.approx(0.97, abs=1e-7) and tau.max() == pytest.approx(1.0, abs=1e-7)


def test_target_tau_takes_tensors_and_returns_float32():
    step = keras.Variable(30, dtype="int64", trainable=False)  # like `optimizer.iterations`
    tau = target_tau(step, tf.constant(60), tf.constant(0.99, tf.float64))
    assert keras.backend.standardize_dtype(tau.dtype) == "float32"
    assert float(tau) == pytest.approx(0.995, abs=1e-7)
    assert keras.backend.standardize_dtype(target_tau(3, 10, 0.9).dtype) == "float32"

    @tf.function(jit_compile=True)
    def traced(k):
        return target_tau(k, 60, 0.99)

    assert float(traced(tf.constant(60, tf.int64))) == pytest.approx(1.0, abs=1e-7)


def test_target_tau_base_one_is_constant_one_and_base_zero_starts_at_zero():
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target_tau(np.arange(11), 10, 1.0)), 1.0)
    assert float(target_tau(0, 10, 0.0)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"base_tau": 1.5}, "`base_tau` must be in \\[0, 1\\]. Received: base_tau=1.5"),
        ({"base_tau": -0.1}, "base_tau=-0.1"),
        ({"total_steps": 0}, "`total_steps` must be > 0. Received: total_steps=0"),
        ({"total_steps": -10}, "total_steps=-10"),
    ],
)
def test_target_tau_rejects_bad_arguments(kwargs, match):
    arguments = {"step": 0, "total_steps": 100, "base_tau": 0.99, **kwargs}
    with pytest.raises(ValueError, match=match):
        target_tau(**arguments)


# --- warmup_cosine / WarmupCosine ---------------------------------------------------------------------


def test_warmup_cosine_end_points():
    base, W, T = 0.4, 10, 110
    value = lambda k: float(warmup_cosine(k, base, W, T))  # noqa: E731
    assert value(0) == 0.0  # documented: the first update uses lr = 0, as in the official code
    assert value(1) == pytest.approx(0.04, abs=1e-7)
    assert value(5) == pytest.approx(0.2, abs=1e-7)
    assert value(W) == pytest.approx(0.4, abs=1e-7)  # warm-up end: the peak
    assert value(W + (T - W) // 2) == pytest.approx(0.2, abs=1e-7)  # cosine midpoint: base / 2
    assert value(T) == pytest.approx(0.0, abs=1e-7)
    assert value(T + 1) == pytest.approx(0.0, abs=1e-7) and value(10 * T) == pytest.approx(0.0, abs=1e-7)
    assert value(-3) == 0.0


def test_warmup_cosine_matches_formula_rises_then_falls():
    steps = np.arange(0, 140)
    lr = keras.ops.convert_to_numpy(warmup_cosine(steps, 0.3, 20, 120))
    np.testing.assert_allclose(lr, _numpy_warmup_cosine(steps, 0.3, 20, 120), atol=1e-7)
    assert np.all(np.diff(lr[:21]) > 0) and np.all(np.diff(lr[20:121]) < 0)
    assert np.all(lr >= 0.0) and lr.max() == pytest.approx(0.3, abs=1e-7)


def test_warmup_cosine_without_warmup_starts_at_base():
    assert float(warmup_cosine(0, 0.5, 0, 100)) == pytest.approx(0.5, abs=1e-7)
    assert float(warmup_cosine(50, 0.5, 0, 100)) == pytest.approx(0.25, abs=1e-7)
    assert float(warmup_cosine(100, 0.5, 0, 100)) == pytest.approx(0.0, abs=1e-7)


def test_warmup_cosine_schedule_class_equals_function_and_returns_float32():
    schedule = WarmupCosine(0.4, 10, 110)
    step = keras.Variable(37, dtype="int64", trainable=False)
    lr = schedule(step)
    assert keras.backend.standardize_dtype(lr.dtype) == "float32"
    assert float(lr) == pytest.approx(_numpy_warmup_cosine(37, 0.4, 10, 110), abs=1e-7)
    assert isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)


def test_warmup_cosine_config_round_trip():
    schedule = WarmupCosine(base_learning_rate=0.6, warmup_steps=7, total_steps=70)
    config = schedule.get_config()
    assert config == {"base_learning_rate": 0.6, "warmup_steps": 7, "total_steps": 70}
    restored = WarmupCosine.from_config(config)
    assert restored.get_config() == config
    # Through Keras' registry, as `load_model` does it.
    serialized = keras.saving.serialize_keras_object(schedule)
    assert serialized["registered_name"] == "byol_keras>WarmupCosine"
    revived = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(revived, WarmupCosine) and revived.get_config() == config
    steps = np.arange(0, 80)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(revived(steps)), keras.ops.convert_to_numpy(schedule(steps))
    )


def _tiny_regression_model():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(1)(keras.layers.Dense(3, activation="relu")(inputs))
    return keras.Model(inputs, outputs)


def test_warmup_cosine_drives_an_optimizer_and_survives_save_and_load(tmp_path):
    model = _tiny_regression_model()
    schedule = WarmupCosine(0.05, warmup_steps=2, total_steps=10)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.random.default_rng(1).normal(size=(8, 1)).astype("float32")

    # lr(0) = 0: the first update leaves the weights where they are; the second one moves them.
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    assert any(not np.array_equal(old, new) for old, new in zip(before, model.get_weights()))
    assert int(model.optimizer.iterations) == 3
    expected = _numpy_warmup_cosine(3, 0.05, 2, 10)
    assert float(model.optimizer.learning_rate) == pytest.approx(expected, abs=1e-7)

    path = tmp_path / "schedule.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer._learning_rate, WarmupCosine)
    assert loaded.optimizer._learning_rate.get_config() == schedule.get_config()
    assert int(loaded.optimizer.iterations) == 3
    assert float(loaded.optimizer.learning_rate) == pytest.approx(float(model.optimizer.learning_rate))
    # Both continue identically from the restored step.
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"base_learning_rate": -0.1}, ValueError, "Received: base_learning_rate=-0.1"),
        ({"base_learning_rate": "0.1"}, ValueError, "base_learning_rate=0.1"),
        ({"warmup_steps": -1}, ValueError, "Received: warmup_steps=-1"),
        ({"warmup_steps": 2.5}, ValueError, "warmup_steps=2.5"),
        ({"total_steps": 0}, ValueError, "Received: total_steps=0"),
        ({"total_steps": 10.0}, ValueError, "total_steps=10.0"),
        ({"warmup_steps": 100, "total_steps": 100}, ValueError, "warmup_steps=100, total_steps=100"),
    ],
)
def test_warmup_cosine_rejects_bad_arguments(kwargs, error, match):
    arguments = {"base_learning_rate": 0.2, "warmup_steps": 10, "total_steps": 100, **kwargs}
    with pytest.raises(error, match=match):
        WarmupCosine(**arguments)
    with pytest.raises(error, match=match):
        warmup_cosine(0, **arguments)


# --- scale_learning_rate ----------------------------------------------------------------------------


def test_scale_learning_rate_is_the_paper_rule():
    assert scale_learning_rate(0.2, 4096) == pytest.approx(3.2)  # the paper's 1000-epoch run
    assert scale_learning_rate(0.3, 256) == pytest.approx(0.3)
    assert scale_learning_rate(0.45, 128) == pytest.approx(0.225)
    assert isinstance(scale_learning_rate(1, 512), float)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "`batch_size` must be a positive integer. Received: batch_size=0"),
        ({"batch_size": 64.0}, "batch_size=64.0"),
        ({"base_learning_rate": -1.0}, "Received: base_learning_rate=-1.0"),
    ],
)
def test_scale_learning_rate_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scale_learning_rate(**{"base_learning_rate": 0.2, "batch_size": 256, **kwargs})


def test_docstring_examples_run():
    result = doctest.testmod(schedules, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6 and result.failed == 0


def test_warmup_cosine_equals_keras_cosine_decay_with_warmup():
    # Keras' CosineDecay with a warm-up computes the same schedule one scalar step at a time (its
    # `ops.cond` refuses a vector of steps, which is why WarmupCosine stays a schedule of its own).
    for warmup, total in ((7, 70), (0, 10), (3, 4)):
        ours = WarmupCosine(0.6, warmup, total)
        keras_schedule = keras.optimizers.schedules.CosineDecay(0.0, total - warmup, alpha=0.0, warmup_target=0.6,
                                                                warmup_steps=warmup)
        for step in range(total + 5):
            assert float(ours(step)) == pytest.approx(float(keras_schedule(step)), abs=1e-6), (warmup, total, step)
