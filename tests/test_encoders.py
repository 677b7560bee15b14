"""encoders.convnet: the shapes, the layers it is made of, and a BYOL step on it."""

import doctest

import keras
import numpy as np
import pytest

from byol_keras import encoders
from byol_keras.encoders import convnet


def test_convnet_halves_the_resolution_after_the_first_layer_and_pools():
    model = convnet((4, 8, 16), input_shape=(16, 16, 3))
    assert model.output_shape == (None, 16)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [4, 8, 16]
    assert [c.strides for c in convs] == [(1, 1), (2, 2), (2, 2)]
    assert all(c.kernel_size == (3, 3) and not c.use_bias for c in convs)
    # 16 → 16 → 8 → 4 before the pooling; every conv is followed by a BatchNorm and a ReLU.
    assert model.get_layer("conv3_relu").output.shape[1:3] == (4, 4)
    names = [layer.name for layer in model.layers]
    for index in (1, 2, 3):
        assert names.index(f"conv{index}_conv") < names.index(f"conv{index}_bn") < names.index(f"conv{index}_relu")
    # The output is the mean of the last ReLU map over space.
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    last = keras.Model(model.input, model.get_layer("conv3_relu").output)(x)
    np.testing.assert_allclose(model(x), np.asarray(last).mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_convnet_takes_an_initializer_and_rejects_bad_widths():
    model = convnet((4,), input_shape=(8, 8, 3), kernel_initializer="zeros")
    assert not np.any(model.get_layer("conv1_conv").kernel.numpy())
    for bad in ((), (4, 0), (4, 2.5), (True,)):
        with pytest.raises(ValueError, match="`widths` must be"):
            convnet(bad)


def test_byol_trains_a_step_on_a_convnet():
    from byol_keras.byol import BYOL

    model = BYOL(convnet((4, 8), input_shape=(8, 8, 3)), projection_dim=8, projection_hidden_dim=16,
                 prediction_hidden_dim=16, total_steps=2)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    views = np.random.default_rng(0).normal(size=(2, 4, 8, 8, 3)).astype("float32")
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors((views[0], views[1]))
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_doctest():
    assert doctest.testmod(encoders).failed == 0


# --- KerasHub backbones as encoders (issue 32) ----------------------------------------------------------------


def tiny_hub_resnet(channels=3):
    """KerasHub's ResNet at its smallest: the stem and one basic block of 64 channels (KerasHub fixes the first
    stage's width at 64)."""
    import keras_hub

    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64], stackwise_num_blocks=[1],
        stackwise_num_strides=[1], block_type="basic_block", image_shape=(None, None, channels))


def tiny_hub_vit():
    import keras_hub

    return keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=8, num_layers=1, num_heads=2,
                                        hidden_dim=8, mlp_dim=16)


def _byol_step(encoder, size=16, channels=3):
    """One LARS step of BYOL on `encoder`; returns the model."""
    import tensorflow as tf

    from byol_keras import LARS, BYOL

    model = BYOL(encoder, projection_dim=8, projection_hidden_dim=16, prediction_hidden_dim=16, total_steps=2)
    model.compile(optimizer=LARS(0.1, weight_decay=1e-6), jit_compile=False)
    views = np.random.default_rng(0).normal(size=(2, 4, size, size, channels)).astype("float32")
    history = model.fit(tf.data.Dataset.from_tensors((views[0], views[1])), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    return model


def test_a_keras_hub_resnet_trains_and_round_trips_through_a_keras_file(tmp_path):
    pytest.importorskip("keras_hub")
    encoder = encoders.keras_hub_encoder(tiny_hub_resnet(), input_shape=(16, 16, 3))
    assert encoder.output_shape == (None, 64)
    from byol_keras import LARS

    lars = LARS(0.1, weight_decay=1e-6)  # BatchNorm's γ and β out of the decay and the trust ratio, kernels in
    assert {(v.path.rsplit("/", 1)[-1], lars.is_adapted(v)) for v in encoder.trainable_variables} == {
        ("kernel", True), ("gamma", False), ("beta", False)}
    model = _byol_step(encoder)
    # The target was built from the encoder's config and moved by the EMA: same structure, other weights.
    assert [w.shape for w in model.target_encoder.weights] == [w.shape for w in model.encoder.weights]
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype("float32")
    model.save(tmp_path / "byol.keras")
    loaded = keras.saving.load_model(tmp_path / "byol.keras", compile=False)
    np.testing.assert_allclose(loaded.encoder(x), model.encoder(x), rtol=1e-5, atol=1e-5)


def test_a_keras_hub_backbone_of_other_channels_than_the_input_is_refused_naming_both():
    """A grayscale run (`--channels 1`) on a 3-channel KerasHub backbone: one error naming the counts and the fix,
    not Keras' shape error at the first call; a backbone built for one channel works."""
    pytest.importorskip("keras_hub")
    with pytest.raises(ValueError, match=r"takes images of 3 channel\(s\), not 1.*image_shape=\(None, None, 1\)"
                                         r".*Received: input_shape=\(16, 16, 1\)"):
        encoders.keras_hub_encoder(tiny_hub_resnet(), input_shape=(16, 16, 1))
    encoder = encoders.keras_hub_encoder(tiny_hub_resnet(channels=1), input_shape=(16, 16, 1))
    features = encoder(np.zeros((2, 16, 16, 1), "float32"))
    assert tuple(features.shape) == (2, 64)


def test_a_keras_hub_encoder_from_a_local_preset_directory_starts_from_its_weights(tmp_path):
    pytest.importorskip("keras_hub")
    backbone = tiny_hub_resnet()
    backbone.save_to_preset(str(tmp_path / "preset"))
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    reference = encoders.keras_hub_encoder(backbone)(x)
    warm = encoders.build_encoder(encoders.encoder_spec(f"keras_hub:{tmp_path / 'preset'}"), 16)
    assert warm.input_shape == (None, 16, 16, 3)
    np.testing.assert_allclose(warm(x), reference, rtol=1e-5, atol=1e-5)
    cold = encoders.keras_hub_encoder(str(tmp_path / "preset"), load_weights=False)
    assert not np.allclose(cold(x), reference, atol=1e-3)


def test_a_keras_hub_vit_pools_its_class_token_and_lars_leaves_its_embeddings_undecayed():
    pytest.importorskip("keras_hub")
    from byol_keras import LARS

    backbone = tiny_hub_vit()
    encoder = encoders.keras_hub_encoder(backbone)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(encoder(x), np.asarray(backbone(x))[:, 0], rtol=1e-6)
    lars = LARS(0.1, weight_decay=1e-6)
    adapted = {v.path: lars.is_adapted(v) for v in encoder.trainable_variables}
    for path in ("vit_patching_and_embedding/class_token", "vit_patching_and_embedding/position_embedding/embeddings",
                 "vit_encoder/transformer_block_1/mha/query/bias", "vit_encoder/transformer_block_1/ln_1/gamma",
                 "vit_patching_and_embedding/patch_embedding/bias"):
        assert adapted[path] is False, path
    for path in ("vit_patching_and_embedding/patch_embedding/kernel", "vit_encoder/transformer_block_1/mha/query/kernel",
                 "vit_encoder/transformer_block_1/mlp/dense_1/kernel"):
        assert adapted[path] is True, path
    _byol_step(encoder)


def test_a_keras_hub_efficientnet_whose_config_loses_its_width_is_refused_naming_the_gap():
    keras_hub = pytest.importorskip("keras_hub")

    def efficientnet(**changes):
        return keras_hub.models.EfficientNetBackbone(
            stackwise_width_coefficients=[1.0], stackwise_depth_coefficients=[1.0], stackwise_kernel_sizes=[3],
            stackwise_num_repeats=[1], stackwise_input_filters=[8], stackwise_output_filters=[8],
            stackwise_expansion_ratios=[1], stackwise_squeeze_and_excite_ratios=[0.25], stackwise_strides=[1],
            stackwise_block_types=["v1"], stackwise_force_input_filters=[0], stackwise_nores_option=[False],
            input_shape=(16, 16, 3), **changes)

    assert encoders.keras_hub_encoder(efficientnet()).output_shape == (None, 1280)
    with pytest.raises(ValueError, match=r"EfficientNetBackbone.get_config\(\) does not rebuild.*num_features"):
        encoders.keras_hub_encoder(efficientnet(num_features=64))


def test_encoder_specs_and_their_errors():
    assert encoders.encoder_spec("resnet18") == {"name": "resnet18"}
    assert encoders.encoder_spec("keras_hub:vit_base:mean") == {"name": "keras_hub", "preset": "vit_base",
                                                                "pooling": "mean"}
    for bad in ("resnet19", "keras_hub:"):
        with pytest.raises(ValueError, match="`encoder` must"):
            encoders.encoder_spec(bad)
    with pytest.raises(ValueError, match="Received: encoder name='vgg'"):
        encoders.build_encoder({"name": "vgg"}, 16)
    with pytest.raises(ValueError, match="Received: pooling='max'"):
        encoders.keras_hub_encoder("unused", pooling="max")
    # Our own encoders take any channel count.
    assert encoders.build_encoder({"name": "resnet18", "width": 2}, 16, channels=4).input_shape == (None, 16, 16, 4)


def test_sync_batchnorm_leaves_a_keras_hub_vit_alone_and_synchronises_a_keras_hub_resnet():
    # ViT has no BatchNorm: nothing to convert, and cloning failed on its patch layer's config (a KerasHub gap).
    pytest.importorskip("keras_hub")
    from byol_keras.layers import sync_batchnorm

    vit = encoders.keras_hub_encoder(tiny_hub_vit())
    assert sync_batchnorm(vit) is vit
    resnet = encoders.keras_hub_encoder(tiny_hub_resnet(), input_shape=(16, 16, 3))
    synced = sync_batchnorm(resnet)
    norms = [l for l in synced._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    assert norms and all(l.synchronized for l in norms)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(synced(x, training=False), resnet(x, training=False), rtol=1e-5, atol=1e-5)
