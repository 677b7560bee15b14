"""BYOL model: target initialisation, the EMA, the loss inside train_step, fit, serialisation, errors."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_keras.byol import BYOL, representation_std
from byol_keras.encoders import convnet, resnet18
from byol_keras.presets import PYTORCH_DEFAULT_INIT

SIZE = 16
BATCH = 8


def tiny_model(encoder=None, **kwargs):
    """BYOL on ResNet-18 of width 4, or on `encoder`, with heads of 16 → 8."""
    defaults = dict(projection_dim=8, projection_hidden_dim=16, prediction_hidden_dim=16)
    defaults.update(kwargs)
    return BYOL(encoder or resnet18(width=4, input_shape=(SIZE, SIZE, 3)), **defaults)


def convnet_model(**kwargs):
    """`tiny_model` on the ConvNet: conv-BN-ReLU at 4 then 8 channels, the layers of ResNet-18's stem (no bias,
    fused BatchNorm). Tracing its step takes about a fifth of ResNet-18's; the tests whose property does
    not depend on the encoder fit this one, and the hand computation of a step runs on ResNet-18."""
    return tiny_model(convnet((4, 8), input_shape=(SIZE, SIZE, 3)), **kwargs)


def views(n=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    v1 = rng.normal(size=(n, SIZE, SIZE, 3)).astype("float32")
    v2 = (v1[:, :, ::-1] + 0.3 * rng.normal(size=v1.shape)).astype("float32")
    return v1, v2


def one_batch_dataset(v1, v2, labels=None):
    data = (v1, v2) if labels is None else (v1, v2, labels)
    return tf.data.Dataset.from_tensors(data)


def numpy_weights(variables):
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]


def tau_at(step, total, base):
    """The paper's schedule, written independently of byol_keras.schedules."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total) + 1.0) / 2.0


def test_target_starts_as_copy_and_has_no_predictor():
    model = tiny_model()
    online = model.encoder.weights + model.projector.weights
    target = model.target_encoder.weights + model.target_projector.weights
    assert len(online) == len(target)
    for o, t in zip(online, target):
        np.testing.assert_array_equal(np.array(o), np.array(t))
    assert not hasattr(model, "target_predictor")
    # The target owns exactly the encoder's and projector's variables: nothing predictor-shaped.
    online_ids = {id(v) for v in model.trainable_variables}
    assert not any(id(v) in online_ids for v in target)
    # Target layers stay trainable (BN must run in training mode); only their variables are frozen.
    assert model.target_encoder.trainable
    assert all(not v.trainable for v in target)


def test_model_call_returns_online_encoder_features():
    model = tiny_model()
    v1, _ = views()
    np.testing.assert_allclose(
        np.array(model(v1)), np.array(model.encoder(v1, training=False)), atol=1e-6
    )
    assert tuple(model(v1).shape) == (BATCH, 32)


@pytest.mark.slow
def test_ema_after_steps_and_bn_statistics_not_averaged():
    total, base = 10, 0.9
    model = convnet_model(base_tau=base, total_steps=total)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=False)
    v1, v2 = views()
    stem_kernel_before = np.array(model.target_encoder.get_layer("conv1_conv").kernel)
    xi_old = numpy_weights([t for t, _ in model._ema_pairs])
    model.fit(one_batch_dataset(v1, v2), epochs=1, verbose=0)
    theta_1 = numpy_weights([o for _, o in model._ema_pairs])
    xi_1 = numpy_weights([t for t, _ in model._ema_pairs])
    tau0 = tau_at(0, total, base)
    assert tau0 == pytest.approx(base)
    moved = 0
    for old, new_online, new_target in zip(xi_old, theta_1, xi_1):
        np.testing.assert_allclose(new_target, tau0 * old + (1 - tau0) * new_online, rtol=1e-5, atol=1e-6)
        moved += not np.allclose(old, new_target)
    assert moved > len(xi_1) // 2, "the target should have moved towards the online network"

    # Second step uses τ at global step 1.
    model.fit(one_batch_dataset(v1, v2), epochs=1, verbose=0)
    theta_2 = numpy_weights([o for _, o in model._ema_pairs])
    xi_2 = numpy_weights([t for t, _ in model._ema_pairs])
    tau1 = tau_at(1, total, base)
    for old, new_online, new_target in zip(xi_1, theta_2, xi_2):
        np.testing.assert_allclose(new_target, tau1 * old + (1 - tau1) * new_online, rtol=1e-5, atol=1e-6)

    # BN moving statistics of the target come from its own forward passes in training mode
    # (view 1, then view 2, momentum 0.9 from 0), not from the EMA of the online statistics.
    bn = model.target_encoder.get_layer("conv1_bn")
    online_bn = model.encoder.get_layer("conv1_bn")
    kernel = tf.constant(stem_kernel_before)
    mu1 = tf.reduce_mean(tf.nn.conv2d(v1, kernel, 1, "SAME"), axis=(0, 1, 2)).numpy()
    mu2 = tf.reduce_mean(tf.nn.conv2d(v2, kernel, 1, "SAME"), axis=(0, 1, 2)).numpy()
    expected_after_first_fit = 0.9 * (0.9 * 0.0 + 0.1 * mu1) + 0.1 * mu2
    # The second fit ran with the step-1 target kernel: recompute with it.
    kernel_1 = tf.constant(
        xi_1[[i for i, (t, _) in enumerate(model._ema_pairs) if t.path == model.target_encoder.get_layer("conv1_conv").kernel.path][0]]
    )
    mu1b = tf.reduce_mean(tf.nn.conv2d(v1, kernel_1, 1, "SAME"), axis=(0, 1, 2)).numpy()
    mu2b = tf.reduce_mean(tf.nn.conv2d(v2, kernel_1, 1, "SAME"), axis=(0, 1, 2)).numpy()
    expected = 0.9 * (0.9 * expected_after_first_fit + 0.1 * mu1b) + 0.1 * mu2b
    np.testing.assert_allclose(np.array(bn.moving_mean), expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(np.array(bn.moving_mean), np.array(online_bn.moving_mean))


def test_no_gradient_reaches_the_target():
    model = tiny_model()
    v1, v2 = views()
    target_vars = model.target_encoder.weights + model.target_projector.weights
    with tf.GradientTape() as tape:
        tape.watch([v.value for v in target_vars])
        _, _, _, loss = model._forward(v1, v2, training=True)
    grads = tape.gradient(loss, [v.value for v in target_vars])
    assert all(g is None for g in grads)
    trainable_ids = {id(v) for v in model.trainable_variables}
    online = model.encoder.trainable_weights + model.projector.trainable_weights + model.predictor.trainable_weights
    assert trainable_ids == {id(v) for v in online}


def test_one_sgd_step_its_loss_and_the_ema_match_plain_tensorflow():
    """The loss inside train_step is the symmetric BYOL loss written in plain TF; gradients reach only the
    online network, through the predictor; then ξ ← τξ + (1 − τ)θ."""
    model = tiny_model(total_steps=5, base_tau=0.9)
    lr = 0.05
    model.compile(optimizer=keras.optimizers.SGD(lr), jit_compile=False)
    v1, v2 = views(seed=4)
    online = model.encoder.trainable_variables + model.projector.trainable_variables + model.predictor.trainable_variables
    theta = numpy_weights(online)
    xi = numpy_weights(model.target_encoder.weights + model.target_projector.weights)

    # The loss, with the heads in plain TF: Dense → BN (batch statistics, eps 1e-5) → ReLU → Dense.
    def head(layers_model, x):
        d1, bn, _, d2 = layers_model.layers
        h = tf.matmul(x, d1.kernel) + d1.bias
        mean, var = tf.nn.moments(h, axes=[0])
        h = (h - mean) / tf.sqrt(var + 1e-5) * bn.gamma + bn.beta
        h = tf.nn.relu(h)
        return tf.matmul(h, d2.kernel) + d2.bias

    def cos(a, b):
        a = a / tf.norm(a, axis=1, keepdims=True)
        b = b / tf.norm(b, axis=1, keepdims=True)
        return tf.reduce_sum(a * b, axis=1)

    h1 = model.encoder(v1, training=True)
    h2 = model.encoder(v2, training=True)
    p1 = head(model.predictor, head(model.projector, h1))
    p2 = head(model.predictor, head(model.projector, h2))
    t1 = head(model.target_projector, model.target_encoder(v1, training=True))
    t2 = head(model.target_projector, model.target_encoder(v2, training=True))
    expected_loss = tf.reduce_mean(2 - 2 * cos(p1, t2)) + tf.reduce_mean(2 - 2 * cos(p2, t1))

    # The step, with the model's own layers and a gradient tape.
    def normalized(x):
        return x / tf.norm(x, axis=1, keepdims=True)

    with tf.GradientTape() as tape:
        p1 = model.predictor(model.projector(model.encoder(v1, training=True), training=True), training=True)
        p2 = model.predictor(model.projector(model.encoder(v2, training=True), training=True), training=True)
        t1 = tf.stop_gradient(model.target_projector(model.target_encoder(v1, training=True), training=True))
        t2 = tf.stop_gradient(model.target_projector(model.target_encoder(v2, training=True), training=True))
        loss = tf.reduce_mean(2 - 2 * tf.reduce_sum(normalized(p1) * normalized(t2), axis=1)) + tf.reduce_mean(
            2 - 2 * tf.reduce_sum(normalized(p2) * normalized(t1), axis=1)
        )
    gradients = tape.gradient(loss, online)
    expected_theta = [w - lr * np.asarray(g) for w, g in zip(theta, gradients)]
    # The plain-TF forward passes above moved the BN moving statistics; put them back.
    for variable, value in zip(model.target_encoder.weights + model.target_projector.weights, xi):
        variable.assign(value)

    history = model.fit(one_batch_dataset(v1, v2), epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(float(expected_loss), rel=1e-4)
    for expected, variable in zip(expected_theta, online):
        np.testing.assert_allclose(np.asarray(variable), expected, rtol=1e-4, atol=1e-6, err_msg=variable.path)
    tau = tau_at(0, 5, 0.9)
    ema_pairs = {id(t): o for t, o in model._ema_pairs}
    assert len(ema_pairs) == len(online) - len(model.predictor.trainable_variables)  # no target predictor
    for target, old in zip(model.target_encoder.weights + model.target_projector.weights, xi):
        if id(target) in ema_pairs:  # parameters: the EMA towards the updated online weights
            new_online = np.asarray(ema_pairs[id(target)])
            np.testing.assert_allclose(np.asarray(target), tau * old + (1 - tau) * new_online, rtol=1e-5, atol=1e-7)
        else:  # BN moving statistics: moved by the target's own forward pass, not averaged
            assert "moving" in target.path and not np.allclose(np.asarray(target), old), target.path


@pytest.mark.slow
def test_fit_lowers_loss_and_does_not_collapse():
    rng = np.random.default_rng(0)
    # Generated images: coloured blobs on noise; the views are random crops + flips of them.
    n = 64
    yy, xx = np.mgrid[0:24, 0:24]
    images = rng.normal(0, 0.2, size=(n, 24, 24, 3)).astype("float32")
    for i in range(n):
        cy, cx, r = rng.integers(6, 18), rng.integers(6, 18), rng.integers(3, 7)
        images[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += rng.normal(0, 1.5, size=3)

    def two_views(x):
        def view(x):
            x = tf.image.random_crop(x, (tf.shape(x)[0], SIZE, SIZE, 3))
            return tf.where(tf.random.uniform((tf.shape(x)[0], 1, 1, 1)) < 0.5, x, x[:, :, ::-1])

        return view(x), view(x)

    ds = tf.data.Dataset.from_tensor_slices(images).shuffle(n, seed=0).batch(16, drop_remainder=True).map(two_views)
    model = convnet_model(base_tau=0.99)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=False)
    history = model.fit(ds.take(1).repeat(), steps_per_epoch=1, epochs=30, verbose=0)
    losses = history.history["loss"]
    assert int(np.array(model._total_steps)) == 30
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1, losses
    assert min(history.history["representation_std"]) > 0.01
    taus = history.history["tau"]
    assert taus[0] == pytest.approx(0.99, abs=1e-6) and taus[-1] == pytest.approx(tau_at(29, 30, 0.99), abs=1e-6)


def test_the_optimizer_is_built_before_the_first_step_is_traced():
    """Without a strategy Keras builds the optimizer inside the first step: a `tf.function` that creates variables is
    traced twice, which doubled the time to the first step. BYOL builds it before (`_maybe_symbolic_build`)."""
    model = convnet_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=False)
    built_at_start = []

    class BuiltAtStart(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            built_at_start.append(self.model.optimizer.built)

    created_in_a_graph = []

    def creator(next_creator, **kwargs):
        if not tf.executing_eagerly():
            created_in_a_graph.append(kwargs.get("name"))
        return next_creator(**kwargs)

    views = tf.random.uniform((2, 4, SIZE, SIZE, 3))
    with tf.variable_creator_scope(creator):
        model.fit(tf.data.Dataset.from_tensor_slices((views[0], views[1])).batch(4), epochs=1, verbose=0,
                  callbacks=[BuiltAtStart()])
    assert built_at_start == [True]
    assert created_in_a_graph == []
    assert int(model.optimizer.iterations) == 1


def test_probe_trains_from_labels():
    """The probe's loss and accuracy count the labelled examples only (label -1: unlabelled)."""
    model = tiny_model(num_classes=3, total_steps=10)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    v1, v2 = views()
    labels = np.array([0, 1, 2, 0, 1, 2, -1, -1], "int32")
    # The first step's probe, from the initial weights: the encoder's features of view 1, standardised over
    # the batch and scaled by 1/sqrt(dim), through the linear layer.
    features = keras.ops.convert_to_numpy(model.encoder(v1, training=True)).astype("float64")
    inputs = (features - features.mean(0)) / np.sqrt(features.var(0) + 1e-5) / np.sqrt(features.shape[1])
    kernel, bias = (keras.ops.convert_to_numpy(w).astype("float64") for w in model.probe.weights)
    logits = inputs @ kernel + bias
    shifted = logits - logits.max(1, keepdims=True)
    cross_entropy = np.log(np.exp(shifted).sum(1)) - shifted[np.arange(BATCH), np.maximum(labels, 0)]
    labelled = labels >= 0
    masked = cross_entropy[labelled].mean()
    assert abs(masked - cross_entropy.mean()) > 1e-3  # counting the unlabelled rows would show
    history = model.fit(one_batch_dataset(v1, v2, labels), epochs=2, verbose=0)
    assert history.history["probe_loss"][0] == pytest.approx(masked, rel=1e-4)
    assert history.history["probe_accuracy"][0] == pytest.approx((logits.argmax(1) == labels)[labelled].mean())
    assert not np.allclose(keras.ops.convert_to_numpy(model.probe.weights[0]), kernel)  # and it trains


def test_probe_learns_at_byol_learning_rates_whatever_the_feature_scale():
    """The probe sees L2-normalised features: a large rate on huge features still converges."""
    encoder = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, padding="same"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Rescaling(1000.0),  # features of norm ~1e3, as a long run's can be
        ]
    )
    model = BYOL(encoder, projection_dim=8, projection_hidden_dim=16, prediction_hidden_dim=16,
                 total_steps=40, num_classes=3)
    model.compile(optimizer=keras.optimizers.SGD(2.0, momentum=0.9), jit_compile=False)
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(3, dtype="int32"), 16)  # 48 images, class c is bright in channel c
    images = rng.normal(0.0, 0.3, (48, 8, 8, 3)).astype("float32")
    images[np.arange(48), :, :, labels] += 2.0
    dataset = tf.data.Dataset.from_tensor_slices((images, images, labels)).batch(48).repeat()
    history = model.fit(dataset, epochs=4, steps_per_epoch=10, verbose=0)
    assert history.history["probe_accuracy"][-1] >= 0.95, history.history["probe_accuracy"]
    # No overshooting on the way: on the raw features the first epoch's mean loss is ~4e7.
    assert max(history.history["probe_loss"]) < 1.0, history.history["probe_loss"]


def test_evaluate_updates_nothing_and_fit_sets_total_steps_and_validates():
    model = convnet_model()  # no total_steps: each fit sets it
    model.compile(optimizer="sgd", jit_compile=False)
    v1, v2 = views()
    before = numpy_weights(model.weights)
    result = model.evaluate(one_batch_dataset(v1, v2), verbose=0, return_dict=True)
    assert 0.0 <= result["loss"] <= 8.0 and "representation_std" in result
    for b, a in zip(before, numpy_weights(model.weights)):
        np.testing.assert_array_equal(b, a)
    ds = tf.data.Dataset.from_tensor_slices((v1, v2)).batch(2)  # 4 batches
    history = model.fit(ds, epochs=3, validation_data=one_batch_dataset(v1, v2), verbose=0)
    assert int(np.array(model._total_steps)) == 12
    assert "val_loss" in history.history
    unknown = ds.filter(lambda a, b: True)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(unknown, epochs=1, verbose=0)


@pytest.mark.slow
def test_save_load_round_trip_and_training_continues(tmp_path):
    model = convnet_model(total_steps=6, base_tau=0.95)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=False)
    v1, v2 = views()
    model.fit(one_batch_dataset(v1, v2).repeat(2), epochs=1, verbose=0)
    path = str(tmp_path / "byol.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, BYOL)
    np.testing.assert_allclose(np.array(loaded(v1)), np.array(model(v1)), atol=1e-6)
    for a, b in zip(model.target_encoder.weights + model.target_projector.weights,
                    loaded.target_encoder.weights + loaded.target_projector.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    assert int(np.array(loaded._total_steps)) == 6
    # Training continues where it stopped: same next-step result on both.
    h_model = model.fit(one_batch_dataset(v1, v2), epochs=1, verbose=0)
    h_loaded = loaded.fit(one_batch_dataset(v1, v2), epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations) == 3
    assert h_loaded.history["loss"][0] == pytest.approx(h_model.history["loss"][0], rel=1e-5)
    assert h_loaded.history["tau"][0] == pytest.approx(tau_at(2, 6, 0.95), abs=1e-6)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)


def test_get_config_from_config_round_trip():
    model = tiny_model(num_classes=4, base_tau=0.99, total_steps=7)
    config = model.get_config()
    clone = BYOL.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    v1, _ = views()
    np.testing.assert_allclose(np.array(clone(v1)), np.array(model(v1)), atol=1e-6)


def test_initializers_reach_every_kernel_and_survive_get_config():
    # PyTorch's default, U(±1/√fan_in): every kernel inside its bound, and filling most of it.
    torch_default = dict(PYTORCH_DEFAULT_INIT, config=dict(PYTORCH_DEFAULT_INIT["config"], seed=1))
    encoder = resnet18(width=4, input_shape=(SIZE, SIZE, 3), kernel_initializer=torch_default)
    model = BYOL(encoder, projection_dim=8, projection_hidden_dim=16, prediction_hidden_dim=16,
                 head_initializer=torch_default)
    model(np.zeros((2, SIZE, SIZE, 3), "float32"))
    kernels = [v for v in model.encoder.weights + model.projector.weights + model.predictor.weights
               if v.path.endswith("kernel")]
    assert len(kernels) == 20 + 4
    for kernel in kernels:
        value = np.array(kernel)
        bound = 1.0 / math.sqrt(np.prod(value.shape[:-1]))
        assert np.abs(value).max() <= bound + 1e-7 and np.abs(value).max() > 0.8 * bound, kernel.path
    # The target is a copy, whatever the initializer.
    np.testing.assert_array_equal(np.array(model.projector.weights[0]), np.array(model.target_projector.weights[0]))
    config = model.get_config()
    assert config["head_initializer"]["class_name"] == "VarianceScaling"
    assert BYOL.from_config(config).get_config()["head_initializer"] == config["head_initializer"]
    # The default stays Keras' Glorot uniform: within ±√(6 / (fan_in + fan_out)).
    default = tiny_model()
    default(np.zeros((2, SIZE, SIZE, 3), "float32"))
    kernel = np.array(default.projector.get_layer("dense_hidden").kernel)
    assert np.abs(kernel).max() > 1.0 / math.sqrt(kernel.shape[0])  # wider than PyTorch's bound here
    with pytest.raises(ValueError, match="head_initializer='nope'"):
        tiny_model(head_initializer="nope")


def test_accepts_keras_applications_and_subclassed_encoders():
    app = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, pooling="avg", input_shape=(32, 32, 3), include_preprocessing=False
    )
    model = BYOL(app, projection_dim=8, projection_hidden_dim=16, prediction_hidden_dim=16)
    assert model.image_shape == (32, 32, 3)
    assert tuple(model(np.zeros((2, 32, 32, 3), "float32")).shape) == (2, app.output_shape[-1])

    @keras.saving.register_keras_serializable(package="byol_keras_tests")
    class Tiny(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(4, 3)
            self.pool = keras.layers.GlobalAveragePooling2D()

        def call(self, x):
            return self.pool(self.conv(x))

    model = BYOL(Tiny(), projection_dim=8, projection_hidden_dim=16, prediction_hidden_dim=16)
    out = model(np.zeros((2, SIZE, SIZE, 3), "float32"))  # built lazily at the first call
    assert tuple(out.shape) == (2, 4)
    for o, t in zip(model.encoder.weights, model.target_encoder.weights):
        np.testing.assert_array_equal(np.array(o), np.array(t))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(base_tau=1.5), "base_tau=1.5"),
        (dict(base_tau=-0.1), "base_tau=-0.1"),
        (dict(projection_dim=0), "projection_dim=0"),
        (dict(projection_hidden_dim=-3), "projection_hidden_dim=-3"),
        (dict(prediction_hidden_dim=0), "prediction_hidden_dim=0"),
        (dict(total_steps=0), "total_steps=0"),
        (dict(num_classes=1), "num_classes=1"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    # The checks do not depend on the encoder: the ConvNet builds in a fraction of ResNet-18's time.
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("-", r"\-")):
        convnet_model(**kwargs)


def test_bad_encoders_are_named():
    with pytest.raises(ValueError, match="encoder=.*str"):
        BYOL("resnet18")
    spatial = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3)], name="spatial")
    with pytest.raises(ValueError, match=r"rank-2.*'spatial'.*\(None, 14, 14, 4\)"):
        BYOL(spatial)


def test_representation_std_golden():
    # Two orthonormal directions, each half of the batch: per-dim std of normalised vectors is 0.5.
    z = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], "float32")
    assert float(representation_std(z)) == pytest.approx(0.5, abs=1e-6)
    collapsed = np.tile([[3.0, 4.0]], (5, 1)).astype("float32")
    assert float(representation_std(collapsed)) == pytest.approx(0.0, abs=1e-6)


def test_train_on_batch_needs_total_steps():
    model = convnet_model()
    model.compile(optimizer="sgd", jit_compile=False)
    v1, v2 = views()
    with pytest.raises(ValueError, match="total_steps"):
        model.train_on_batch(v1, v2)
    model = convnet_model(total_steps=3)
    model.compile(optimizer="sgd", jit_compile=False)
    logs = model.train_on_batch(v1, v2, return_dict=True)
    assert logs["tau"] == pytest.approx(0.996)


def test_resnet18_without_stem_relu_is_lightlys_benchmark_backbone():
    with_relu = resnet18(width=2, input_shape=(8, 8, 3))
    without = resnet18(width=2, input_shape=(8, 8, 3), stem_relu=False)
    names = {layer.name for layer in without.layers}
    assert "stem_relu" not in names and "stem_relu" in {layer.name for layer in with_relu.layers}
    without.set_weights(with_relu.get_weights())  # the ReLU has no weights: same variables
    # The first block (and its identity shortcut) reads the stem's BatchNorm output, negatives included.
    stem = keras.Model(without.inputs, without.get_layer("stem_bn").output)
    block_in = keras.Model(without.inputs, without.get_layer("stage1_block1_1_conv").input)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(stem(x, training=True), block_in(x, training=True))
    assert float(np.min(stem(x, training=True))) < 0
    assert np.abs(np.asarray(without(x, training=True)) - np.asarray(with_relu(x, training=True))).max() > 1e-3
    with pytest.raises(TypeError, match="stem_relu"):
        resnet18(width=2, stem_relu="no")


@pytest.mark.parametrize("padding, offset", [("same", 1), ("symmetric", 0)])
def test_resnet18_downsample_padding_centres(padding, offset):
    # A kernel whose only tap is its centre reads the input pixel the window is centred on:
    # TensorFlow's "same" on an even input centres output i on input 2i + 1, PyTorch's padding=1 on 2i.
    encoder = resnet18(width=2, input_shape=(8, 8, 3), downsample_padding=padding)
    conv = encoder.get_layer("stage2_block1_1_conv")
    shortcut = encoder.get_layer("stage2_block1_proj_conv")
    kernel = np.zeros(conv.kernel.shape, "float32")
    kernel[1, 1, :, :2] = np.eye(2, dtype="float32")  # output channels 0, 1 copy the 2 inputs
    conv.kernel.assign(kernel)
    shortcut.kernel.assign(kernel[1:2, 1:2])  # the same identity as a 1×1 kernel
    probe = keras.Model(encoder.inputs, [shortcut.input, conv.output, shortcut.output])
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    before, after, skipped = (np.asarray(t) for t in probe(x, training=False))
    assert after.shape[1:3] == skipped.shape[1:3] == (4, 4)
    np.testing.assert_allclose(after[..., :2], before[:, offset::2, offset::2], atol=1e-6)
    # The 1×1 strided shortcut samples 2i either way: aligned with the main path only when symmetric.
    np.testing.assert_allclose(skipped[..., :2], before[:, ::2, ::2], atol=1e-6)
    assert encoder.output_shape == (None, 16)


def test_resnet18_downsample_padding_is_checked():
    with pytest.raises(ValueError, match="downsample_padding"):
        resnet18(width=2, downsample_padding="valid")
    with pytest.raises(ValueError, match="stem_relu"):
        resnet18(width=2, cifar_stem=False, stem_relu=False, downsample_padding="symmetric")
    imagenet = resnet18(width=2, input_shape=(32, 32, 3), cifar_stem=False, downsample_padding="symmetric")
    assert imagenet.get_layer("stem_pool").output.shape[1:3] == (8, 8)


def test_views_made_on_the_device_are_keyed_by_the_seed_and_the_global_step():
    """With `augment_on="device"`, a seeded augment draws from (seed, global step): a model rebuilt from a backup
    (the same step, a new augment whose seed generators start over) makes the uninterrupted model's views."""
    from byol_keras.views import BYOLAugment
    from byol_keras.encoders import convnet

    def model_at(step, seed=3):
        augment = BYOLAugment(16, seed=seed, blur=False, jit_compile=False)
        model = BYOL(convnet(input_shape=(16, 16, 3), widths=(4, 8)), projection_dim=8, projection_hidden_dim=16,
                     prediction_hidden_dim=16, augment=augment, augment_on="device")
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.optimizer.iterations.assign(step)
        return model

    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (4, 20, 20, 3), dtype=np.uint8))
    crops = tuple(tf.constant(rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)) for _ in range(2))
    for batch in ((images, tf.zeros(4, tf.int32)), crops + (tf.zeros(4, tf.int32),)):
        a, b = model_at(5)._views(batch), model_at(5)._views(batch)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert not np.array_equal(a[0], model_at(6)._views(batch)[0])  # another step, other draws
        assert not np.array_equal(a[0], model_at(5, seed=4)._views(batch)[0])
    assert model_at(5, seed=None)._views_key() is None  # unseeded: the augment's own generators
