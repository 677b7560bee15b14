"""Named pretraining configurations, as data.

A preset is a plain dict of the arguments a run (`byol_keras/experiment.py`) needs; `get_preset(name, **overrides)`
returns a copy with fields replaced, which is also how tests shrink one. The paper's values are the
named constants below, read from the official code (deepmind-research `byol/configs/byol.py`) and the
paper (Grill et al., 2020, arXiv 2006.07733).
"""

import copy

# The optimizers a configuration can name (`optimizers.build_optimizer` builds each).
OPTIMIZERS = ("lars", "sgd-l2", "sgd")

# Official BYOL presets by number of pretraining epochs (configs/byol.py).
PAPER_LR_PRESETS = {40: 0.45, 100: 0.45, 300: 0.3, 1000: 0.2}
PAPER_WD_PRESETS = {40: 1e-6, 100: 1e-6, 300: 1e-6, 1000: 1.5e-6}
PAPER_EMA_PRESETS = {40: 0.97, 100: 0.99, 300: 0.99, 1000: 0.996}
PAPER_BATCH_SIZE = 4096
PAPER_WARMUP_EPOCHS = 10

# Every field a preset has, with its meaning. `byol_keras.experiment` reads exactly these.
FIELDS = {
    "source": "where the values come from",
    "data": "TFDS name, image folder or 'digits'",
    "train_split": "split (or sub-folder) to pretrain on",
    "test_split": "split used as kNN queries (None: no kNN monitor)",
    "data_dir": "TFDS data directory (None: TFDS default)",
    "image_size": "side of the augmented views",
    "channels": "image channels: 3 (RGB; grayscale files replicated) or 1 (each image's luma, kept as one channel)",
    "blur": "Gaussian blur in the views (off at 32 px)",
    "encoder": "dict: name ('resnet18' | 'resnet50' | 'convnet' | 'keras_hub') and its arguments",
    "projection_dim": "projector/predictor output",
    "projection_hidden_dim": "projector hidden width",
    "prediction_hidden_dim": "predictor hidden width",
    "head_initializer": "the heads' Dense kernel initializer (Keras identifier or config)",
    "epochs": "pretraining epochs",
    "batch_size": "global batch size",
    "optimizer": "'lars', 'sgd-l2' (coupled L2, as PyTorch) or 'sgd' (Keras' decoupled decay)",
    "base_learning_rate": "LR for batch 256 (scaled by batch_size / 256)",
    "weight_decay": "weight decay (biases and BN excluded for LARS)",
    "momentum": "optimizer momentum",
    "trust_coefficient": "LARS trust coefficient η (the paper: 1e-3)",
    "clip_lr": "LARS: clip the local rate to min(ratio / lr, 1) (solo-learn's clip_lr)",
    "trust_ratio": "LARS trust ratio: 'official' (η‖w‖/‖g + wd·w‖) or 'pytorch' (η‖w‖/(‖g‖ + wd‖w‖), solo-learn)",
    "warmup_epochs": "linear LR warm-up epochs",
    "base_tau": "τ_base of the target EMA",
    "knn_bank_per_class": "kNN bank: first N training images of each class (None: all)",
    "knn_queries_per_class": "kNN queries: first N test images of each class (None: all)",
    "knn_every_n_epochs": "kNN monitor frequency",
    "knn_k": "kNN neighbours (200 as solo-learn and lightly; fewer for tiny banks)",
    "augment": "dict of BYOLView overrides for both views (e.g. crop_area); {} = the paper's",
    "limit_per_class": "pretrain on the first N images of each class only (None: all)",
    "probe": "train the online linear probe when labels exist",
}

# PyTorch's default for Conv2d and Linear weights, kaiming_uniform(a=√5) = U(±1/√fan_in), as a Keras
# initializer config (for `encoder={"kernel_initializer": ...}` and `head_initializer`). Every kernel of
# these networks feeds a BatchNorm or the normalised loss, so the initial scale sets the effective
# learning rate (∝ lr / ‖w‖²): Keras' he_normal convolutions start √6 times larger (6× slower).
PYTORCH_DEFAULT_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"},
}

# solo-learn's CIFAR-10 BYOL recipe (scripts/pretrain/cifar/byol.yaml, augmentations/asymmetric.yaml, and
# the defaults it inherits: warm-up 10 epochs, momentum 0.9, bicubic RandomResizedCrop), in preset fields.
# Solarization 0.0 / 0.2 and flip 0.5 are `view_configs`' defaults; exclude_bias_n_norm is LARS' rank rule.
SOLO_LEARN_CIFAR_BYOL = {
    "image_size": 32,
    "blur": False,  # gaussian_blur prob 0.0 in both views
    "encoder": {"name": "resnet18", "width": 64, "cifar_stem": True},
    "projection_dim": 256,
    "projection_hidden_dim": 4096,
    "prediction_hidden_dim": 4096,
    "epochs": 1000,
    "batch_size": 256,
    "optimizer": "lars",
    "base_learning_rate": 1.0,
    "weight_decay": 1e-5,
    "momentum": 0.9,
    "trust_coefficient": 0.02,
    "clip_lr": True,
    "trust_ratio": "pytorch",
    "warmup_epochs": 10,
    "base_tau": 0.99,
    "augment": {
        "crop_area": (0.08, 1.0),
        "crop_style": "torchvision",
        "interpolation": "bicubic",
        "jitter_style": "torchvision",
        "jitter_prob": 0.8,
        "brightness": 0.4,
        "contrast": 0.4,
        "saturation": 0.2,
        "hue": 0.1,
        "grayscale_prob": 0.2,
        "flip_prob": 0.5,
    },
}

_BASE = {
    "source": "",
    "data": "digits",
    "train_split": "train",
    "test_split": "test",
    "data_dir": None,
    "image_size": 32,
    "channels": 3,
    "blur": False,
    "encoder": {"name": "resnet18", "width": 64, "cifar_stem": True},
    "projection_dim": 256,
    "projection_hidden_dim": 4096,
    "prediction_hidden_dim": 4096,
    "head_initializer": "glorot_uniform",
    "epochs": 100,
    "batch_size": 256,
    "optimizer": "lars",
    "base_learning_rate": 0.45,
    "weight_decay": 1e-6,
    "momentum": 0.9,
    "trust_coefficient": 1e-3,
    "clip_lr": False,
    "trust_ratio": "official",
    "warmup_epochs": 10,
    "base_tau": 0.99,
    "knn_bank_per_class": None,
    "knn_queries_per_class": None,
    "knn_every_n_epochs": 1,
    "knn_k": 200,
    "augment": {},
    "limit_per_class": None,
    "probe": True,
}


def imagenet_resnet50(epochs=1000):
    """The paper's ImageNet ResNet-50 run for 40, 100, 300 or 1000 epochs (batch 4096, LARS)."""
    if epochs not in PAPER_LR_PRESETS:
        raise ValueError(
            f"`epochs` must be one of the paper's presets {sorted(PAPER_LR_PRESETS)}. Received: epochs={epochs!r}"
        )
    return dict(
        _BASE,
        source=(
            "Grill et al. 2020, configs/byol.py: LARS, batch 4096, 10 warm-up epochs, LR/WD/τ by length; "
            "utils/dataset.py's crop (crop_style 'official')"
        ),
        data="imagenet2012",
        test_split="validation",
        image_size=224,
        blur=True,
        encoder={"name": "resnet50"},
        epochs=epochs,
        batch_size=PAPER_BATCH_SIZE,
        base_learning_rate=PAPER_LR_PRESETS[epochs],
        weight_decay=PAPER_WD_PRESETS[epochs],
        warmup_epochs=PAPER_WARMUP_EPOCHS,
        base_tau=PAPER_EMA_PRESETS[epochs],
        knn_bank_per_class=50,
        knn_queries_per_class=10,
        knn_every_n_epochs=10,
        augment={"crop_style": "official"},
    )


PRESETS = {
    "imagenet-resnet50": imagenet_resnet50(1000),
    "imagenet-resnet50-300": imagenet_resnet50(300),
    "imagenet-resnet50-100": imagenet_resnet50(100),
    # CIFAR-10 with the 3×3-stem ResNet-18: solo-learn's recipe, field by field (SOLO_LEARN_CIFAR_BYOL).
    "cifar10-resnet18": dict(
        _BASE,
        source=(
            "solo-learn scripts/pretrain/cifar/byol.yaml + augmentations/asymmetric.yaml, field by field "
            "(LARS lr 1.0 at batch 256, eta 0.02, clip_lr, biases and norms excluded, wd 1e-5, warm-up cosine, "
            "tau 0.99, 1000 epochs, heads 4096/256/4096, torchvision colour jitter, no blur). Departs in the "
            "input normalisation (ImageNet mean/std here, CIFAR's there; a BatchNorm follows the first conv)"
        ),
        data="cifar10",
        **SOLO_LEARN_CIFAR_BYOL,
        knn_every_n_epochs=10,
    ),
    # The short schedule people try first: lightly's CIFAR-10 benchmark step with the faster target of the
    # official 40-epoch preset, measured on this project's quality budget (docs/results.md).
    "cifar10-resnet18-short": dict(
        _BASE,
        source=(
            "measured (docs/results.md): lightly's CIFAR-10 benchmark step (SGD 0.06 per 128 images, momentum "
            "0.9, coupled weight decay 5e-4, PyTorch's default init, torchvision's view maths), in this "
            "library's loss units (its gradient is 4x lightly's: LR 0.03 and wd 2e-3 per 256), no warm-up, "
            "and tau_base 0.97 (the official preset for its shortest, 40-epoch schedule), which beat 0.99 on "
            "three seeds; the paper's LARS at lr 1.0 barely moves the weights in a few thousand steps"
        ),
        data="cifar10",
        encoder={"name": "resnet18", "width": 64, "cifar_stem": True, "kernel_initializer": PYTORCH_DEFAULT_INIT},
        head_initializer=PYTORCH_DEFAULT_INIT,
        epochs=50,
        batch_size=256,
        optimizer="sgd-l2",
        base_learning_rate=0.03,
        weight_decay=2e-3,
        warmup_epochs=0,
        base_tau=0.97,
        augment={"jitter_style": "torchvision", "interpolation": "bilinear"},
        knn_every_n_epochs=5,
    ),
    # STL-10 at 96 px, pretraining on train + unlabelled (100k + 5k images), ImageNet stem.
    "stl10-resnet18": dict(
        _BASE,
        source="paper's augmentations at 96 px (blur on); LARS as cifar10-resnet18",
        data="stl10",
        train_split="train+unlabelled",
        image_size=96,
        blur=True,
        encoder={"name": "resnet18", "width": 64, "cifar_stem": False},
        epochs=400,
        batch_size=256,
        base_learning_rate=1.0,
        weight_decay=1e-5,
        base_tau=0.99,
        knn_bank_per_class=500,
        knn_every_n_epochs=10,
    ),
    # The README's first command: scikit-learn's bundled handwritten digits (offline), a three-layer ConvNet
    # and small heads, short enough to watch (docs/results.md has its time and kNN figures). 8×8 digits
    # are not ImageNet: the paper's 8 %-area crops cut a digit to a stroke, flips turn a 2 into an S,
    # solarisation inverts the strokes and blur erases them. Views for digits: crops of 60-100 % of the
    # image (small shifts and zooms), brightness and contrast jitter, nothing else. 16 px views hold the 8×8
    # images (read at 32 px, so windows are finer than a digit's pixel) with a quarter of 32 px's pixels. The
    # optimiser is the CIFAR baselines' SGD with coupled weight decay and PyTorch's initialisation
    # (`cifar10-resnet18-short`).
    "demo": dict(
        _BASE,
        source=(
            "this project's digits demo, measured (docs/results.md): views for 8x8 digits (crops of 60-100 %, "
            "brightness and contrast 0.4; no flip, hue, saturation, solarisation or blur), 16 px, "
            "cifar10-resnet18-short's SGD step"
        ),
        data="digits",
        image_size=16,
        encoder={"name": "convnet", "widths": (16, 32, 64), "kernel_initializer": PYTORCH_DEFAULT_INIT},
        head_initializer=PYTORCH_DEFAULT_INIT,
        projection_dim=64,
        projection_hidden_dim=256,
        prediction_hidden_dim=256,
        epochs=200,
        batch_size=128,
        optimizer="sgd-l2",
        base_learning_rate=0.03,
        weight_decay=2e-3,
        warmup_epochs=0,
        base_tau=0.99,
        knn_k=20,
        knn_every_n_epochs=25,
        augment={"crop_area": (0.6, 1.0), "flip_prob": 0.0, "brightness": 0.4, "contrast": 0.4,
                 "saturation": 0.0, "hue": 0.0, "solarize_prob": 0.0},
    ),
}


def get_preset(name, **overrides):
    """A copy of preset `name` with `overrides` applied.

    Args:
        name: str, one of `PRESETS`.
        **overrides: fields to replace; `None` values are ignored (unset command-line flags).

    Returns:
        dict with every key of `FIELDS`.

    Raises:
        ValueError: unknown preset or unknown field.
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset. Expected one of {sorted(PRESETS)}. Received: preset={name!r}")
    config = copy.deepcopy(PRESETS[name])
    for key, value in overrides.items():
        if key not in FIELDS:
            raise ValueError(f"Unknown preset field. Expected one of {sorted(FIELDS)}. Received: {key}={value!r}")
        if value is not None:
            config[key] = value
    config["preset"] = name
    return config


# Where `byol_keras.cli.pretrain` points a user whose `--epochs` is far below a preset's schedule.
SHORT_SCHEDULE_PRESETS = {
    "cifar10-resnet18": "cifar10-resnet18-short",
    "imagenet-resnet50": "imagenet-resnet50-100",
    "imagenet-resnet50-300": "imagenet-resnet50-100",
}
