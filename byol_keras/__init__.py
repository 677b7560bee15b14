"""byol_keras: BYOL (Bootstrap Your Own Latent, Grill et al. 2020) for Keras 3 on TensorFlow.

The public names import lazily, so `import byol_keras` stays cheap and free of side effects:

    from byol_keras import BYOL, LARS, WarmupCosine, BYOLAugment, resnet18
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "BYOL": "byol",
    "representation_std": "byol",
    "byol_loss": "losses",
    "mlp_head": "heads",
    "resnet18": "encoders",
    "resnet50": "encoders",
    "target_tau": "schedules",
    "WarmupCosine": "schedules",
    "scale_learning_rate": "schedules",
    "LARS": "optimizers",
    "BYOLAugment": "augment",
    "BYOLView": "augment",
}
_SUBMODULES = (
    "augment", "byol", "callbacks", "data", "distribute", "encoders", "evaluation", "export",
    "heads", "losses", "optimizers", "presets", "schedules",
)

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"byol_keras.{_EXPORTS[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"byol_keras.{name}")
    raise AttributeError(f"module 'byol_keras' has no attribute {name!r}")


def __dir__():
    return __all__
