"""Tests for byol_keras.optimizers.LARS: hand-computed steps, exclusion rules, Keras integration.

The golden numbers below were worked out by hand (the arithmetic is in the comments) for a 2×2 kernel
`w = [[3, 0], [0, 4]]` (‖w‖ = 5) and a bias `b = [3, 4]` (‖b‖ = 5), with lr = 0.1, momentum m = 0.9,
η = 0.1 (large, so that the numbers stay readable) and, where used, weight decay wd = 0.4.
"""

import doctest
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras import optimizers
from byol_keras.optimizers import LARS, lars_local_rate, lars_trust_ratio
from byol_keras.schedules import WarmupCosine

KERNEL = np.array([[3.0, 0.0], [0.0, 4.0]], np.float32)
BIAS = np.array([3.0, 4.0], np.float32)
# Neither gradient is parallel to its weight, so weight decay changes the direction before the trust
# ratio rescales it (with g ∥ w, LARS would make weight decay invisible).
KERNEL_GRAD = np.array([[0.0, 0.9], [1.2, 0.0]], np.float32)
BIAS_GRAD = np.array([1.2, -0.9], np.float32)


def _dense_layer():
    """A built Dense(2) on 2 inputs whose kernel/bias are KERNEL/BIAS; paths like 'dense_3/kernel'."""
    layer = keras.layers.Dense(2)
    layer.build((None, 2))
    layer.kernel.assign(KERNEL)
    layer.bias.assign(BIAS)
    return layer


def _step(optimizer, layer, grads=(KERNEL_GRAD, BIAS_GRAD), steps=1):
    for _ in range(steps):
        optimizer.apply([tf.constant(g) for g in grads], [layer.kernel, layer.bias])
    return layer.kernel.numpy(), layer.bias.numpy()


def _lars(**kwargs):
    arguments = {"learning_rate": 0.1, "momentum": 0.9, "trust_coefficient": 0.1, **kwargs}
    return LARS(**arguments)


def _numpy_lars(weight, grads, lr, momentum, eta, weight_decay, adapted, nesterov=False):
    """Independent float64 reference of the official BYOL LARS, for one variable over several steps."""
    weight = np.array(weight, np.float64)
    velocity = np.zeros_like(weight)
    for grad in grads:
        grad = np.array(grad, np.float64)
        if adapted:
            grad = grad + weight_decay * weight
            w_norm, g_norm = np.linalg.norm(weight), np.linalg.norm(grad)
            grad = grad * (eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0)
        velocity = momentum * velocity + grad
        weight = weight - lr * ((momentum * velocity + grad) if nesterov else velocity)
    return weight


def _random_dense_and_grads(seed, steps=3):
    """A built Dense(3 → 4) with random kernel and bias, and `steps` random (kernel, bias) gradients."""
    rng = np.random.default_rng(seed)
    layer = keras.layers.Dense(4)
    layer.build((None, 3))
    kernel0 = rng.normal(size=(3, 4)).astype(np.float32)
    bias0 = rng.normal(size=(4,)).astype(np.float32)
    layer.kernel.assign(kernel0)
    layer.bias.assign(bias0)
    grads = [(rng.normal(size=(3, 4)), rng.normal(size=(4,))) for _ in range(steps)]
    return layer, kernel0, bias0, [(k.astype(np.float32), b.astype(np.float32)) for k, b in grads]


def _numpy_solo_learn_lars(weight, grads, lr, momentum, eta, weight_decay, clip_lr, adapted):
    """Independent float64 reference of solo-learn's LARS (PyTorch Lightning Bolts), one variable.

    Its `step`: for an adapted variable with both norms > 0, `local = η‖w‖ / (‖g‖ + wd‖w‖ + eps)`, with
    `clip_lr` `local = min(local / lr, 1)`, `d = (g + wd·w)·local`; otherwise `d = g`. Then
    `buf = m·buf + d` (buf = d at the first step), `w -= lr·buf`.
    """
    weight = np.array(weight, np.float64)
    buf = None
    for grad in grads:
        d = np.array(grad, np.float64)
        w_norm, g_norm = np.linalg.norm(weight), np.linalg.norm(d)
        if adapted and w_norm != 0 and g_norm != 0:
            local = eta * w_norm / (g_norm + w_norm * weight_decay + 1e-8)
            if clip_lr:
                local = min(local / lr, 1.0)
            d = (d + weight_decay * weight) * local
        buf = d.copy() if buf is None else momentum * buf + d
        weight = weight - lr * buf
    return weight


# --- the trust ratio -----------------------------------------------------------------------------------


def test_trust_ratio_golden_and_zero_norms():
    # ‖w‖ = 5, ‖g‖ = √(1.44 + 0.81 + 1.44 + 2.56) = √6.25 = 2.5, so η·‖w‖/‖g‖ = 0.1 · 5 / 2.5 = 0.2.
    g = np.array([[1.2, 0.9], [1.2, 1.6]], np.float32)
    assert float(lars_trust_ratio(KERNEL, g, 0.1)) == pytest.approx(0.2, abs=1e-7)
    zeros = np.zeros((2, 2), np.float32)
    assert float(lars_trust_ratio(zeros, g, 0.1)) == 1.0
    assert float(lars_trust_ratio(KERNEL, zeros, 0.1)) == 1.0
    assert float(lars_trust_ratio(zeros, zeros, 0.1)) == 1.0


def test_local_rate_golden_in_both_styles_with_and_without_clip():
    # ‖w‖ = 5, ‖g‖ = 1.5, wd = 0.4, η = 0.1. Official: ‖g + wd·w‖ = 2.5 → 0.1·5/2.5 = 0.2.
    # PyTorch (solo-learn): 0.1·5 / (1.5 + 0.4·5) = 0.5 / 3.5 = 1/7.
    assert float(lars_local_rate(KERNEL, KERNEL_GRAD, 0.1, 0.4)) == pytest.approx(0.2, abs=1e-7)
    pytorch = lars_local_rate(KERNEL, KERNEL_GRAD, 0.1, 0.4, style="pytorch")
    assert float(pytorch) == pytest.approx(1 / 7, abs=1e-7)
    # clip_lr: min(rate / lr, 1). At lr 1.0 nothing changes; at lr 0.5 it is 2/7; at lr 0.1 the clip binds.
    assert float(lars_local_rate(KERNEL, KERNEL_GRAD, 0.1, 0.4, 1.0, "pytorch")) == pytest.approx(1 / 7, abs=1e-7)
    assert float(lars_local_rate(KERNEL, KERNEL_GRAD, 0.1, 0.4, 0.5, "pytorch")) == pytest.approx(2 / 7, abs=1e-7)
    assert float(lars_local_rate(KERNEL, KERNEL_GRAD, 0.1, 0.4, 0.1, "pytorch")) == 1.0
    # Zero norms: no adaptation, whatever the clip (lr 2 would otherwise halve it).
    zeros = np.zeros((2, 2), np.float32)
    assert float(lars_local_rate(zeros, KERNEL_GRAD, 0.1, 0.4, 2.0, "pytorch")) == 1.0
    assert float(lars_local_rate(KERNEL, zeros, 0.1, 0.4, 2.0, "pytorch")) == 1.0
    with pytest.raises(ValueError, match="Received: style='torch'"):
        lars_local_rate(KERNEL, KERNEL_GRAD, 0.1, style="torch")


@pytest.mark.parametrize(
    "learning_rate, expected",
    [
        # lr 0.1: clip binds (1/7 / 0.1 > 1), local 1: w − 0.1·(g + wd·w) = w − 0.1·[[1.2, .9], [1.2, 1.6]].
        (0.1, [[2.88, -0.09], [-0.12, 3.84]]),
        # lr 1.0: local 1/7: w − 1.0·[[1.2, .9], [1.2, 1.6]] / 7.
        (1.0, [[3 - 1.2 / 7, -0.9 / 7], [-1.2 / 7, 4 - 1.6 / 7]]),
    ],
)
def test_one_step_solo_learn_style_by_hand(learning_rate, expected):
    layer = _dense_layer()
    optimizer = _lars(learning_rate=learning_rate, weight_decay=0.4, clip_lr=True, trust_ratio="pytorch")
    kernel, bias = _step(optimizer, layer)
    np.testing.assert_allclose(kernel, expected, atol=1e-6)
    # The bias (rank 1) is excluded, as solo-learn's exclude_bias_n_norm: plain momentum SGD, no decay.
    np.testing.assert_allclose(bias, BIAS - learning_rate * BIAS_GRAD, atol=1e-6)


@pytest.mark.parametrize("clip_lr, learning_rate", [(True, 0.05), (True, 2.0), (False, 2.0)])
def test_matches_solo_learn_reference_over_three_steps(clip_lr, learning_rate):
    layer, kernel0, bias0, grads = _random_dense_and_grads(seed=3)
    optimizer = LARS(learning_rate, momentum=0.9, trust_coefficient=0.02, weight_decay=1e-2, clip_lr=clip_lr,
                     trust_ratio="pytorch")
    for kernel_grad, bias_grad in grads:
        optimizer.apply([tf.constant(kernel_grad), tf.constant(bias_grad)], [layer.kernel, layer.bias])
    common = {"lr": learning_rate, "momentum": 0.9, "eta": 0.02, "weight_decay": 1e-2, "clip_lr": clip_lr}
    expected_kernel = _numpy_solo_learn_lars(kernel0, [g for g, _ in grads], adapted=True, **common)
    expected_bias = _numpy_solo_learn_lars(bias0, [g for _, g in grads], adapted=False, **common)
    np.testing.assert_allclose(layer.kernel.numpy(), expected_kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), expected_bias, rtol=1e-5, atol=1e-6)


def test_solo_learn_style_leaves_a_zero_gradient_undecayed():
    variable = keras.Variable(KERNEL)
    LARS(0.1, momentum=0.0, trust_coefficient=0.1, weight_decay=0.4, trust_ratio="pytorch").apply(
        [tf.zeros((2, 2))], [variable]
    )
    np.testing.assert_array_equal(variable.numpy(), KERNEL)


# --- one and two steps by hand --------------------------------------------------------------------------


def test_one_step_with_weight_decay_default_exclusion():
    layer = _dense_layer()
    optimizer = _lars(weight_decay=0.4)
    kernel, bias = _step(optimizer, layer)
    # Kernel (rank 2, adapted): g + wd·w = [[0, .9], [1.2, 0]] + [[1.2, 0], [0, 1.6]]
    # = [[1.2, .9], [1.2, 1.6]], ‖·‖ = 2.5, trust = 0.2, adapted g = [[.24, .18], [.24, .32]] = v; w − 0.1·v:
    np.testing.assert_allclose(kernel, [[2.976, -0.018], [-0.024, 3.968]], atol=1e-6)
    # Bias (rank 1, excluded: no decay, no trust ratio): v = g, b − 0.1·g = [3 − .12, 4 + .09].
    np.testing.assert_allclose(bias, [2.88, 4.09], atol=1e-6)
    # Keras' own decoupled decay (w ← w − lr·wd·w) must not have run on top: it would give 0.96·w first.
    np.testing.assert_allclose(optimizer._momentums[0].numpy(), [[0.24, 0.18], [0.24, 0.32]], atol=1e-6)
    np.testing.assert_allclose(optimizer._momentums[1].numpy(), [1.2, -0.9], atol=1e-6)
    assert int(optimizer.iterations) == 1


@pytest.mark.parametrize("weight_decay", [None, 0.0])
def test_one_step_without_weight_decay(weight_decay):
    layer = _dense_layer()
    kernel, bias = _step(_lars(weight_decay=weight_decay), layer)
    # ‖g‖ = √(.81 + 1.44) = 1.5, trust = 0.1·5/1.5 = 1/3, adapted g = [[0, .3], [.4, 0]].
    np.testing.assert_allclose(kernel, [[3.0, -0.03], [-0.04, 4.0]], atol=1e-6)
    np.testing.assert_allclose(bias, [2.88, 4.09], atol=1e-6)


def test_two_steps_cover_momentum():
    layer = _dense_layer()
    optimizer = _lars(weight_decay=0.1)
    grads = (0.3 * KERNEL, BIAS_GRAD)  # kernel gradient parallel to w, so that two steps stay readable
    kernel, bias = _step(optimizer, layer, grads=grads)
    # Step 1: g + wd·w = 0.4·w (‖·‖ = 2), trust = 0.1·5/2 = 0.25, v₁ = 0.1·w = [[.3, 0], [0, .4]],
    # w₁ = 0.99·w.
    np.testing.assert_allclose(kernel, [[2.97, 0.0], [0.0, 3.96]], atol=1e-6)
    np.testing.assert_allclose(bias, [2.88, 4.09], atol=1e-6)
    kernel, bias = _step(optimizer, layer, grads=grads)
    # Step 2: g + wd·w₁ = 0.3·w + 0.099·w = 0.399·w (‖·‖ = 1.995), ‖w₁‖ = 4.95,
    # adapted g = 0.1·4.95/1.995 · 0.399·w = 0.099·w = [[.297, 0], [0, .396]],
    # v₂ = 0.9·[[.3, 0], [0, .4]] + [[.297, 0], [0, .396]] = [[.567, 0], [0, .756]], w₂ = w₁ − 0.1·v₂.
    np.testing.assert_allclose(kernel, [[2.9133, 0.0], [0.0, 3.8844]], atol=1e-6)
    # Bias (excluded): v₂ = 0.9·g + g = 1.9·g, b₂ = b₁ − 0.19·g = [2.88 − .228, 4.09 + .171].
    np.testing.assert_allclose(bias, [2.652, 4.261], atol=1e-6)
    assert int(optimizer.iterations) == 2


def test_without_trust_ratio_it_is_pytorch_sgd_with_coupled_weight_decay():
    # trust_coefficient=None, nothing excluded: torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.1).
    # The figures were checked with torch 2.14 (w = [1, -2], g = [0.5, 0.5] twice -> [0.8266, -2.0867]).
    variable = keras.Variable(np.array([1.0, -2.0], np.float32))
    optimizer = LARS(learning_rate=0.1, momentum=0.9, weight_decay=0.1, trust_coefficient=None,
                     exclude_from_adaptation=[])
    gradient = np.array([0.5, 0.5], np.float32)
    optimizer.apply_gradients([(gradient, variable)])
    # g + wd·w = [.6, .3] = v₁, w₁ = w − 0.1·v₁.
    np.testing.assert_allclose(variable.numpy(), [0.94, -2.03], atol=1e-6)
    optimizer.apply_gradients([(gradient, variable)])
    # g + wd·w₁ = [.594, .297], v₂ = 0.9·v₁ + that = [1.134, .567], w₂ = w₁ − 0.1·v₂.
    np.testing.assert_allclose(variable.numpy(), [0.8266, -2.0867], atol=1e-6)
    # Keras' SGD with the same weight_decay decays decoupled (w ← w − lr·wd·w, outside the momentum):
    # equal after one step, different from the second on.
    decoupled = keras.Variable(np.array([1.0, -2.0], np.float32))
    sgd = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        sgd.apply_gradients([(gradient, decoupled)])
    # Step 2: 0.99·[.94, −2.03] − 0.1·(0.9·.5 + .5) = [.8356, −2.1047].
    np.testing.assert_allclose(decoupled.numpy(), [0.8356, -2.1047], atol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1e-3, "1e-3", True])
def test_trust_coefficient_must_be_none_or_positive(bad):
    with pytest.raises(ValueError, match="trust_coefficient"):
        LARS(trust_coefficient=bad)


def test_nesterov_one_step():
    layer = _dense_layer()
    kernel, bias = _step(_lars(weight_decay=0.4, nesterov=True), layer)
    # v₁ = adapted g, step = m·v₁ + g = 1.9·g: w − 0.19·[[.24, .18], [.24, .32]], b − 0.19·[1.2, −.9].
    np.testing.assert_allclose(kernel, [[2.9544, -0.0342], [-0.0456, 3.9392]], atol=1e-6)
    np.testing.assert_allclose(bias, [2.772, 4.171], atol=1e-6)


# --- which variables are adapted ------------------------------------------------------------------------


def test_override_list_replaces_the_rank_rule():
    layer = _dense_layer()
    kernel, bias = _step(_lars(weight_decay=0.4, exclude_from_adaptation=["kernel"]), layer)
    # Kernel now excluded: plain momentum SGD, w − 0.1·g.
    np.testing.assert_allclose(kernel, [[3.0, -0.09], [-0.12, 4.0]], atol=1e-6)
    # Bias now adapted although it has rank 1: g + wd·b = [1.2 + 1.2, −.9 + 1.6] = [2.4, .7], ‖·‖ = 2.5,
    # trust = 0.2, adapted g = [.48, .14], b − 0.1·[.48, .14].
    np.testing.assert_allclose(bias, [2.952, 3.986], atol=1e-6)


def test_empty_override_list_adapts_everything():
    layer = _dense_layer()
    kernel, bias = _step(_lars(weight_decay=0.4, exclude_from_adaptation=[]), layer)
    np.testing.assert_allclose(kernel, [[2.976, -0.018], [-0.024, 3.968]], atol=1e-6)
    np.testing.assert_allclose(bias, [2.952, 3.986], atol=1e-6)


def test_default_rule_excludes_biases_and_batchnorm_of_a_convnet():
    model = _small_convnet()
    optimizer = LARS()
    optimizer.build(model.trainable_variables)
    adapted = {v.path for v, a in zip(model.trainable_variables, optimizer._adapted) if a}
    assert adapted == {v.path for v in model.trainable_variables if v.path.endswith("kernel")}
    assert any("gamma" in v.path for v in model.trainable_variables)  # BN parameters are in the model
    by_name = LARS(exclude_from_adaptation=["batch_normalization", "bias"])
    by_name.build(model.trainable_variables)
    assert by_name._adapted == optimizer._adapted


def test_keras_exclude_from_weight_decay_is_honoured():
    layer = _dense_layer()
    optimizer = _lars(weight_decay=0.4)
    optimizer.exclude_from_weight_decay(var_names=["kernel"])
    kernel, _ = _step(optimizer, layer)
    # No decay on the kernel, but it keeps the trust ratio: the no-weight-decay golden.
    np.testing.assert_allclose(kernel, [[3.0, -0.03], [-0.04, 4.0]], atol=1e-6)


# --- zero norms -------------------------------------------------------------------------------------------


def test_zero_weight_gives_trust_one():
    layer = _dense_layer()
    layer.kernel.assign(np.zeros((2, 2), np.float32))
    kernel, _ = _step(_lars(weight_decay=0.4), layer)
    # wd·0 = 0 and ‖w‖ = 0 ⇒ trust 1: w₁ = 0 − 0.1·g.
    np.testing.assert_allclose(kernel, [[0.0, -0.09], [-0.12, 0.0]], atol=1e-7)


def test_zero_gradient_gives_trust_one_and_momentum_carries_on():
    layer = _dense_layer()
    optimizer = _lars()
    zero_grads = (np.zeros((2, 2), np.float32), np.zeros(2, np.float32))
    kernel, bias = _step(optimizer, layer, grads=zero_grads)
    np.testing.assert_array_equal(kernel, KERNEL)  # ‖g‖ = 0 ⇒ trust 1 ⇒ no change, and no NaN
    np.testing.assert_array_equal(bias, BIAS)
    kernel, _ = _step(optimizer, layer)  # a real step: w₁ = [[3, −.03], [−.04, 4]], v₁ = [[0, .3], [.4, 0]]
    kernel, _ = _step(optimizer, layer, grads=zero_grads)  # v₂ = 0.9·v₁, w₂ = w₁ − 0.1·0.9·v₁
    np.testing.assert_allclose(kernel, [[3.0, -0.057], [-0.076, 4.0]], atol=1e-6)
    assert np.all(np.isfinite(optimizer._momentums[0].numpy()))


# --- against an independent reference, over several steps ------------------------------------------------


@pytest.mark.parametrize(
    "weight_decay, nesterov, exclude", [(1e-2, False, None), (None, False, None), (1e-2, True, ["bias"])]
)
def test_matches_numpy_reference_over_three_steps(weight_decay, nesterov, exclude):
    layer, kernel0, bias0, grads = _random_dense_and_grads(seed=7)
    optimizer = LARS(0.5, momentum=0.9, trust_coefficient=0.05, nesterov=nesterov, weight_decay=weight_decay,
                     exclude_from_adaptation=exclude)
    for kernel_grad, bias_grad in grads:
        optimizer.apply([tf.constant(kernel_grad), tf.constant(bias_grad)], [layer.kernel, layer.bias])
    common = {
        "lr": 0.5, "momentum": 0.9, "eta": 0.05, "weight_decay": weight_decay or 0.0, "nesterov": nesterov
    }
    expected_kernel = _numpy_lars(kernel0, [g for g, _ in grads], adapted=True, **common)
    expected_bias = _numpy_lars(bias0, [g for _, g in grads], adapted=False, **common)
    np.testing.assert_allclose(layer.kernel.numpy(), expected_kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), expected_bias, rtol=1e-5, atol=1e-6)


def test_indexed_slices_gradient_equals_its_dense_form():
    # Embedding gradients arrive as IndexedSlices (with a repeated row here); the trust ratio needs the
    # norm of the dense, summed gradient.
    values = tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [1.0, 1.0, 1.0]])
    slices = tf.IndexedSlices(values, tf.constant([0, 2, 0]), dense_shape=tf.constant([4, 3]))
    results = []
    for gradient in (slices, tf.convert_to_tensor(slices)):
        variable = keras.Variable(np.arange(12, dtype=np.float32).reshape(4, 3) / 10)
        LARS(0.1, trust_coefficient=0.1, weight_decay=0.01).apply([gradient], [variable])
        results.append(variable.numpy())
    np.testing.assert_allclose(results[0], results[1], atol=1e-7)
    assert not np.allclose(results[0], np.arange(12).reshape(4, 3) / 10)


# --- Keras integration ----------------------------------------------------------------------------------


def _small_convnet():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _tiny_data(n=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 3, size=(n,))


def _fit(model, optimizer, jit_compile, epochs=2):
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    x, y = _tiny_data()
    return model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)


def test_config_round_trip():
    optimizer = LARS(learning_rate=0.3, momentum=0.8, trust_coefficient=0.01, nesterov=True,
                     exclude_from_adaptation=["bias", "gamma"], weight_decay=1e-6, clip_lr=True,
                     trust_ratio="pytorch", name="lars_x")
    config = optimizer.get_config()
    expected = {
        "learning_rate": 0.3, "momentum": 0.8, "trust_coefficient": 0.01, "nesterov": True,
        "exclude_from_adaptation": ["bias", "gamma"], "weight_decay": 1e-6, "clip_lr": True,
        "trust_ratio": "pytorch", "name": "lars_x",
    }
    for key, value in expected.items():
        assert config[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    assert LARS.from_config(config).get_config() == config
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(revived, LARS) and revived.get_config() == config

    scheduled = LARS(learning_rate=WarmupCosine(0.4, 5, 50), weight_decay=1e-6)
    revived = LARS.from_config(scheduled.get_config())
    assert isinstance(revived._learning_rate, WarmupCosine)
    assert revived.get_config() == scheduled.get_config()


@pytest.mark.slow
def test_small_model_fits_with_and_without_jit_compile():
    initial = _small_convnet().get_weights()
    weights = {}
    for jit in (False, True):
        model = _small_convnet()
        model.set_weights(initial)
        history = _fit(model, LARS(0.5, weight_decay=1e-4), jit_compile=jit)
        assert np.all(np.isfinite(history.history["loss"]))
        assert int(model.optimizer.iterations) == 4
        weights[jit] = model.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(initial, weights[False]))
    # XLA runs the same update: both trainings end at the same weights.
    for a, b in zip(weights[False], weights[True]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_inside_loss_scale_optimizer():
    layer = _dense_layer()
    optimizer = keras.optimizers.LossScaleOptimizer(_lars(weight_decay=0.4), initial_scale=1024.0)
    # Gradients of a loss scaled by 1024; the wrapper unscales them before LARS sees them.
    scaled = [tf.constant(1024.0 * KERNEL_GRAD), tf.constant(1024.0 * BIAS_GRAD)]
    optimizer.apply(scaled, [layer.kernel, layer.bias])
    np.testing.assert_allclose(layer.kernel.numpy(), [[2.976, -0.018], [-0.024, 3.968]], atol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), [2.88, 4.09], atol=1e-6)
    # A non-finite step is skipped: no weight, momentum or iteration moves; the scale halves.
    before = [v.numpy().copy() for v in optimizer.inner_optimizer.variables]
    optimizer.apply([tf.constant(np.full((2, 2), np.inf, np.float32)), tf.constant(BIAS_GRAD)],
                    [layer.kernel, layer.bias])
    for old, new in zip(before, optimizer.inner_optimizer.variables):
        np.testing.assert_array_equal(old, new.numpy())
    np.testing.assert_allclose(layer.kernel.numpy(), [[2.976, -0.018], [-0.024, 3.968]], atol=1e-6)
    assert float(optimizer.dynamic_scale) == 512.0

    model = _small_convnet()
    wrapped = keras.optimizers.LossScaleOptimizer(LARS(0.5, weight_decay=1e-4))
    history = _fit(model, wrapped, jit_compile=False)
    assert np.all(np.isfinite(history.history["loss"]))


def test_save_and_load_restore_momentum_and_iterations(tmp_path):
    model = _small_convnet()
    schedule = WarmupCosine(0.5, 2, 20)
    _fit(model, LARS(schedule, weight_decay=1e-4, exclude_from_adaptation=["bias"]), jit_compile=False)
    assert int(model.optimizer.iterations) == 4
    path = tmp_path / "lars.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert isinstance(loaded.optimizer, LARS)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert int(loaded.optimizer.iterations) == 4
    saved_slots = [v.numpy() for v in model.optimizer._momentums]
    loaded_slots = [v.numpy() for v in loaded.optimizer._momentums]
    assert len(saved_slots) == len(model.trainable_variables) and any(np.any(s != 0) for s in saved_slots)
    for saved, restored in zip(saved_slots, loaded_slots):
        np.testing.assert_array_equal(saved, restored)
    # The restored state is used: one more epoch from either model lands on the same weights.
    x, y = _tiny_data()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf

    # Two logical CPUs, so that MirroredStrategy has two replicas on a machine without GPUs.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from byol_keras.optimizers import LARS

    def build():
        # No BatchNorm: per-replica batch statistics would make the two runs legitimately differ.
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(5, activation="tanh")(inputs)
        return keras.Model(inputs, keras.layers.Dense(2)(hidden))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    keras.utils.set_random_seed(0)
    initial = build().get_weights()

    def run(strategy):
        with strategy.scope():
            model = build()
            model.set_weights(initial)
            optimizer = LARS(0.5, momentum=0.9, trust_coefficient=0.02, weight_decay=0.05)
            model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        return model.get_weights(), [v.numpy() for v in model.optimizer.variables]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    single_weights, single_slots = run(tf.distribute.get_strategy())
    mirrored_weights, mirrored_slots = run(mirrored)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single_weights + single_slots,
                                                             mirrored_weights + mirrored_slots))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(single_weights, initial))
    print("RESULT", diff, moved)
    """
)


@pytest.mark.slow
def test_mirrored_strategy_matches_a_single_device(tmp_path):
    # A subprocess, because the logical-device split must happen before TensorFlow initialises, which
    # the rest of this test session has already done.
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    completed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                               cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT"))
    diff, moved = (float(v) for v in line.split()[1:])
    assert moved > 1e-2  # the optimizer did train
    assert diff < 1e-5  # two replicas, all-reduced gradients: the same LARS steps as on one device


# --- bad arguments --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"momentum": 1.5}, ValueError, "`momentum` must be a float in \\[0, 1\\]. Received: momentum=1.5"),
        ({"momentum": -0.1}, ValueError, "momentum=-0.1"),
        ({"momentum": "0.9"}, ValueError, "momentum=0.9"),
        ({"trust_coefficient": 0.0}, ValueError, "Received: trust_coefficient=0.0"),
        ({"trust_coefficient": -1e-3}, ValueError, "trust_coefficient=-0.001"),
        ({"weight_decay": -1e-6}, ValueError, "Received: weight_decay=-1e-06"),
        ({"nesterov": "yes"}, TypeError, "Received: nesterov='yes'"),
        ({"clip_lr": 1}, TypeError, "Received: clip_lr=1"),
        ({"trust_ratio": "solo"}, ValueError, "Received: trust_ratio='solo'"),
        ({"exclude_from_adaptation": "bias"}, TypeError, "Received: exclude_from_adaptation='bias'"),
        ({"exclude_from_adaptation": ["bias", 3]}, TypeError, "exclude_from_adaptation=\\['bias', 3\\]"),
    ],
)
def test_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        LARS(**kwargs)


def test_docstring_examples_run():
    result = doctest.testmod(optimizers)
    assert result.attempted >= 1 and result.failed == 0


def test_lars_default_rule_also_excludes_biases_of_any_rank_position_embeddings_and_class_tokens():
    # A ViT's attention biases are (heads, head_dim) and its class token (1, 1, dim): the rank rule alone decays them.
    def variable(name, shape):
        return keras.Variable(np.ones(shape, "float32"), name=name)

    lars = LARS(0.1, weight_decay=1e-6)
    excluded = [variable("bias", (2, 4)), variable("class_token", (1, 1, 8)), variable("embeddings", (5,))]
    layer = keras.layers.Embedding(5, 8, name="position_embedding")
    layer.build((None,))
    excluded.append(layer.embeddings)
    assert [lars.is_adapted(v) for v in excluded] == [False] * 4
    assert [lars.is_adapted(v) for v in (variable("kernel", (2, 4)), variable("bias_kernel", (3, 3)))] == [True, True]
