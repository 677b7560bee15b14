"""Every preset that names a source matches it field by field; the source's values are written out here,
transcribed from the source itself, next to the preset field each one sets."""

import pytest

from byol_keras.presets import FIELDS, PAPER_EMA_PRESETS, PRESETS, PYTORCH_DEFAULT_INIT, get_preset

# solo-learn, scripts/pretrain/cifar/byol.yaml and augmentations/asymmetric.yaml (+ the defaults they
# inherit: warm-up 10 epochs, LARS momentum 0.9, bicubic RandomResizedCrop). (source key, value, preset field).
SOLO_LEARN_CIFAR = [
    ("method_kwargs.proj_hidden_dim", 4096, "projection_hidden_dim"),
    ("method_kwargs.proj_output_dim", 256, "projection_dim"),
    ("method_kwargs.pred_hidden_dim", 4096, "prediction_hidden_dim"),
    ("momentum.base_tau", 0.99, "base_tau"),
    ("optimizer.name", "lars", "optimizer"),
    ("optimizer.batch_size", 256, "batch_size"),
    ("optimizer.lr", 1.0, "base_learning_rate"),
    ("optimizer.weight_decay", 1e-5, "weight_decay"),
    ("optimizer.kwargs.clip_lr", True, "clip_lr"),
    ("optimizer.kwargs.eta", 0.02, "trust_coefficient"),
    ("LARS (PyTorch Lightning Bolts) trust ratio", "pytorch", "trust_ratio"),
    ("LARS momentum", 0.9, "momentum"),
    ("scheduler warmup_epochs", 10, "warmup_epochs"),
    ("max_epochs", 1000, "epochs"),
    ("crop_size", 32, "image_size"),
    ("gaussian_blur.prob (both views)", False, "blur"),
    ("backbone.name", "resnet18", "encoder.name"),
    ("rrc.crop_min_scale, crop_max_scale", (0.08, 1.0), "augment.crop_area"),
    ("torchvision RandomResizedCrop", "torchvision", "augment.crop_style"),
    ("RandomResizedCrop interpolation", "bicubic", "augment.interpolation"),
    ("color_jitter: torchvision ColorJitter", "torchvision", "augment.jitter_style"),
    ("color_jitter.prob", 0.8, "augment.jitter_prob"),
    ("color_jitter.brightness", 0.4, "augment.brightness"),
    ("color_jitter.contrast", 0.4, "augment.contrast"),
    ("color_jitter.saturation", 0.2, "augment.saturation"),
    ("color_jitter.hue", 0.1, "augment.hue"),
    ("grayscale.prob", 0.2, "augment.grayscale_prob"),
    ("horizontal_flip.prob", 0.5, "augment.flip_prob"),
]

# The official code, byol/configs/byol.py (and the paper, arXiv 2006.07733): (epochs, base LR, weight decay, τ).
OFFICIAL_IMAGENET = {"imagenet-resnet50": (1000, 0.2, 1.5e-6, 0.996), "imagenet-resnet50-300": (300, 0.3, 1e-6, 0.99),
                     "imagenet-resnet50-100": (100, 0.45, 1e-6, 0.99)}


def _field(config, dotted):
    value = config
    for key in dotted.split("."):
        value = value[key]
    return value


def _with_view_defaults(config):
    """The preset's view arguments as `view_configs` resolves them (defaults where a preset is silent)."""
    from byol_keras.views import view_configs

    first, second = view_configs(config["image_size"], blur=config["blur"], **config["augment"])
    return first, second


@pytest.mark.parametrize("source_key, source_value, field", SOLO_LEARN_CIFAR)
def test_cifar10_preset_matches_solo_learn(source_key, source_value, field):
    config = get_preset("cifar10-resnet18")
    if field.startswith("augment."):
        first, second = _with_view_defaults(config)
        name = field.split(".", 1)[1]
        for view in (first, second):
            assert view[name] == source_value, (source_key, view[name])
    else:
        assert _field(config, field) == source_value, (source_key, _field(config, field))


def test_cifar10_views_solarize_as_solo_learn_and_blur_nowhere():
    first, second = _with_view_defaults(get_preset("cifar10-resnet18"))
    assert (first["solarize_prob"], second["solarize_prob"]) == (0.0, 0.2)  # solarization.prob 0.0 / 0.2
    assert first["blur_prob"] == second["blur_prob"] == 0.0
    assert get_preset("cifar10-resnet18")["encoder"]["cifar_stem"] is True  # 3×3 stem, no max-pool


@pytest.mark.parametrize("name", sorted(OFFICIAL_IMAGENET))
def test_imagenet_presets_match_the_official_config(name):
    epochs, lr, wd, tau = OFFICIAL_IMAGENET[name]
    config = get_preset(name)
    assert (config["epochs"], config["base_learning_rate"], config["weight_decay"], config["base_tau"]) == (
        epochs, lr, wd, tau)
    assert (config["optimizer"], config["trust_coefficient"], config["momentum"]) == ("lars", 1e-3, 0.9)
    assert (config["clip_lr"], config["trust_ratio"]) == (False, "official")
    assert (config["batch_size"], config["warmup_epochs"]) == (4096, 10)
    assert (config["projection_hidden_dim"], config["projection_dim"], config["prediction_hidden_dim"]) == (
        4096, 256, 4096)
    assert (config["image_size"], config["blur"], config["encoder"]["name"]) == (224, True, "resnet50")
    # The paper's views as `view_configs` defines them, cropped as byol/utils/dataset.py's `_decode_and_random_crop`.
    assert config["augment"] == {"crop_style": "official"}


# lightly's CIFAR-10 benchmark recipe (as benchmarks/peer_quality.py runs it): SGD 0.06 per 128 images, momentum
# 0.9, weight decay 5e-4 on every parameter, PyTorch's initialisation, torchvision's views, τ_base 0.99.
LIGHTLY_CIFAR10 = {"lr_per_128": 0.06, "momentum": 0.9, "weight_decay": 5e-4, "base_tau": 0.99}


def test_short_preset_is_the_measured_recipe_and_says_where_it_departs():
    config = get_preset("cifar10-resnet18-short")
    # lightly's step in this library's units: the paper's loss 2 - 2cos has 4x the gradient of lightly's
    # 0.5(-cos - cos), so the rate is /4 and the coupled decay x4; per 256 images, as every preset.
    expected = {
        "optimizer": "sgd-l2",
        "base_learning_rate": pytest.approx(LIGHTLY_CIFAR10["lr_per_128"] * 256 / 128 / 4),
        "weight_decay": pytest.approx(LIGHTLY_CIFAR10["weight_decay"] * 4),
        "momentum": LIGHTLY_CIFAR10["momentum"],
        "warmup_epochs": 0,
        "head_initializer": PYTORCH_DEFAULT_INIT,
        "augment": {"jitter_style": "torchvision", "interpolation": "bilinear"},  # torchvision's defaults
        "base_tau": PAPER_EMA_PRESETS[40],  # the departure: the official preset for its shortest schedule
    }
    assert {key: config[key] for key in expected} == expected
    assert config["encoder"] == {"name": "resnet18", "width": 64, "cifar_stem": True,
                                 "kernel_initializer": PYTORCH_DEFAULT_INIT}
    assert 50 <= config["epochs"] <= 100
    # The recipe measured in docs/results.md is benchmarks/quality.py's `short`: this preset unchanged; its
    # `lightly-tv` (lightly's own τ) differs from it in τ_base alone.
    from benchmarks import quality

    assert quality.RECIPES["short"] == ("cifar10-resnet18-short", {})
    short, lightly = quality.recipe_fields("short"), quality.recipe_fields("lightly-tv")
    assert {key for key in short if short[key] != lightly[key]} == {"base_tau"}
    assert lightly["base_tau"] == LIGHTLY_CIFAR10["base_tau"]
    # The source names each departure from lightly with the value the preset holds.
    source = config["source"]
    assert f"tau_base {config['base_tau']}" in source
    assert f"LR {config['base_learning_rate']}" in source and "wd 2e-3" in source and "no warm-up" in source


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_names_its_source_and_has_every_field(name):
    config = PRESETS[name]
    assert config["source"]
    assert set(FIELDS) <= set(config)
