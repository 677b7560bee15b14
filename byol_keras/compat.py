"""The private Keras and TensorFlow internals byol_keras relies on, in one place, each with why.

Checked against TensorFlow 2.21.0 and Keras 3.15.1 (`CHECKED_WITH`, the versions `requirements.txt` pins);
`tests/test_compat.py` calls every one of them, so an upgrade that moves one fails there first. None is
imported until it is called: `byol_keras.onednn` must run before TensorFlow starts.

- `onednn_enabled`, `x86`: TensorFlow's own flags (`tensorflow.python.util._pywrap_util_port`); no public API
  says whether its oneDNN kernels are on.
- `tensorflow_runtime_started`: `tensorflow.python.eager.context._context._initialized`, whether TensorFlow
  has created its devices (and read its allocator's variables); no public API says so without starting it.
- `op_determinism_enabled`: `tensorflow.python.framework.config.is_op_determinism_enabled`, the getter of
  `tf.config.experimental.enable_op_determinism()` (Keras reads the same one).
- `functional_class`: `keras.src.models.functional.Functional`, which Keras has no public name for.
- `set_initial_epoch`: `model._initial_epoch`, the epoch `fit` starts from (Keras' `BackupAndRestore` sets it).
"""

CHECKED_WITH = {"tensorflow": "2.21.0", "keras": "3.15.1"}


def onednn_enabled():
    """Whether TensorFlow's oneDNN CPU kernels are on in this process (fixed when TensorFlow started)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def x86():
    """Whether TensorFlow runs on an x86 CPU."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsX86Available())


def tensorflow_runtime_started():
    """Whether TensorFlow's eager context has created its devices; False when TensorFlow is not imported."""
    import sys

    if "tensorflow" not in sys.modules:
        return False
    from tensorflow.python.eager import context

    return context._context is not None and bool(context._context._initialized)


def op_determinism_enabled():
    """Whether `tf.config.experimental.enable_op_determinism()` is in force."""
    from tensorflow.python.framework.config import is_op_determinism_enabled

    return bool(is_op_determinism_enabled())


def functional_class():
    """Keras' class of functional models (`keras.Model(inputs, outputs)`; `keras.Sequential` is not one)."""
    from keras.src.models.functional import Functional

    return Functional


def set_initial_epoch(model, epoch):
    """Make the next `model.fit` start at `epoch` (0-based), or at its `initial_epoch` argument for None."""
    model._initial_epoch = epoch
