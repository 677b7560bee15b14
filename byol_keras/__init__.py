"""byol_keras: BYOL (Bootstrap Your Own Latent, Grill et al. 2020) for Keras 3 on TensorFlow.

    from byol_keras import BYOL, LARS, WarmupCosine, BYOLAugment, resnet18

Importing the package imports neither TensorFlow nor Keras (the commands answer `--help` without them): every
module loads on first use, as an attribute (`byol_keras.data`), an import (`from byol_keras.data import
load_source`) or a public name (`from byol_keras import BYOL`). The first public name taken from the package
registers all of its Keras objects (BYOL, LARS, WarmupCosine, the augmentation layers) with Keras'
serialisation, so that `keras.saving.load_model` rebuilds a saved run after `from byol_keras import BYOL`;
`byol_keras.run_folder` registers them itself before it loads. `__all__` names the public classes and functions.

Imported before TensorFlow, the package turns TensorFlow's oneDNN CPU kernels on (`TF_ENABLE_ONEDNN_OPTS=1`)
unless that variable is set, and TensorFlow's pooling allocator for CPU tensors (`TF_CPU_ALLOCATOR_USE_BFC=true`)
unless that one is set or TensorFlow already runs: `byol_keras.onednn` says why, and how to check.
"""

import importlib

# First, before anything imports TensorFlow (which reads the variable once, when it starts): TensorFlow's
# oneDNN kernels on unless TF_ENABLE_ONEDNN_OPTS is set; on AVX2-only CPUs its default is off and the BYOL
# step 1.6x slower. The one thing importing byol_keras changes outside itself (byol_keras/onednn.py).
from byol_keras import onednn as _onednn

_onednn.use_onednn()
# TensorFlow's BFC allocator for CPU tensors unless TF_CPU_ALLOCATOR_USE_BFC is set: with oneDNN off its
# default is malloc, which slows every compiled stage of the views (byol_keras/onednn.py).
_onednn.use_bfc_allocator()

# The one place the version is written: pyproject.toml reads it (setuptools `attr`) into the distribution's
# metadata, so `importlib.metadata.version("byol-keras")` gives the same string.
__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "BYOL": "byol",
    "representation_std": "byol",
    "byol_loss": "losses",
    "mlp_head": "heads",
    "convnet": "encoders",
    "resnet18": "encoders",
    "resnet50": "encoders",
    "keras_hub_encoder": "encoders",
    "target_tau": "schedules",
    "WarmupCosine": "schedules",
    "scale_learning_rate": "schedules",
    "LARS": "optimizers",
    "BYOLAugment": "views",
    "BYOLView": "views",
    "LayerViews": "views",
}
# reachable as attributes, not star-imported
_SUBMODULES = (
    "byol", "callbacks", "cli", "cluster", "compat", "data", "decoding", "distribute", "embedding", "encoders",
    "eval_data", "export", "fault_tolerance", "heads", "knn", "layers", "losses", "onednn",
    "optimizers", "preprocessing", "presets", "progress", "run_folder", "schedules", "sources", "subsets",
    "transfer", "validation", "views",
)

__all__ = sorted(_EXPORTS)


# The modules that define the serialisable classes a saved BYOL model refers to.
_REGISTERING = ("byol", "optimizers", "schedules", "views")


def __getattr__(name):
    if name in _EXPORTS:
        for module in _REGISTERING:  # a public name registers every Keras object (keras.saving.load_model)
            importlib.import_module(f"byol_keras.{module}")
        return getattr(importlib.import_module(f"byol_keras.{_EXPORTS[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"byol_keras.{name}")
    raise AttributeError(f"module 'byol_keras' has no attribute {name!r}")


def __dir__():
    return sorted(set(__all__) | set(_SUBMODULES) | {"__version__"})
