"""TensorFlow's oneDNN kernels and CPU allocator: chosen before TensorFlow starts, and what is true once it has.

TensorFlow decides once, when it is imported, whether its oneDNN CPU kernels are on (`IsMklEnabled`):
`TF_ENABLE_ONEDNN_OPTS=1` or `0` if set, otherwise its own default, which is *off* on x86 CPUs without
the AI extensions (AVX-512 VNNI/BF16, AMX), AMD Zen and older Intel CPUs among them. There the BYOL step
runs on Eigen kernels, about 1.6 times slower (issue 21: ResNet-18 w64, B128, 32 px on a 2-vCPU AMD EPYC,
8.0 images/s off, 13.1 on).

- `use_onednn()`: sets `TF_ENABLE_ONEDNN_OPTS=1` unless the variable is set (the user's choice wins) or
  TensorFlow is already imported (too late to matter). `byol_keras/__init__.py` (which imports no TensorFlow)
  calls it, so the commands, `training/*.py`, the benchmarks and the tests, which all import byol_keras
  first, run with oneDNN on.
- `onednn_state()`: the variable, who set it, and whether TensorFlow's oneDNN kernels are really on;
  `config.json` records it.
- `tell_if_off()`: one logged line when the kernels are off by TensorFlow's default on an x86 CPU
  (a script that imported TensorFlow before byol_keras), with the cost and the fix.

Safe to turn on: oneDNN's 1×1 backward-weights kernel corrupts the heap for a *strided* 1×1 convolution
with fewer input channels than its channel block (8 with AVX2, 16 with AVX-512; uxlfoundation/oneDNN#6035,
`tests/test_onednn.py`). Our ResNet-18 computes its strided 1×1 shortcuts without that kernel
(`byol_keras.layers.StridedPointwiseConv2D`); the ConvNet has no 1×1 convolution; Keras' ResNet-50 has
strided 1×1 convolutions only on 256 or more channels.

The allocator comes with the kernels: with oneDNN on, TensorFlow allocates CPU tensors from oneDNN's pooling
allocator (`MklCPUAllocator`, best-fit with coalescing over regions it keeps); with oneDNN off, from plain
`malloc`, which hands every large buffer back to the system when it is freed, so that each step's tensors of
megabytes are mapped and page-faulted afresh: every compiled stage of the views runs slower (measured in
docs/results.md).

- `use_bfc_allocator()`: sets `TF_CPU_ALLOCATOR_USE_BFC=true` (TensorFlow's own best-fit-with-coalescing
  allocator for CPU tensors, the same design as oneDNN's) unless the variable is set or TensorFlow's runtime
  has started (it reads the variable when it creates its devices, at the first operation, so this still
  works after `import tensorflow`), and raises the allocator's cap (`TF_CPU_BFC_MEM_LIMIT_IN_MB`, 64 GiB by
  default) to the machine's memory where that is larger, unless set. Called by `byol_keras/__init__.py`.
- `allocator_state()`: the variable, who set it, and whether TensorFlow's CPU allocator really pools.

This module imports TensorFlow only inside `onednn_state`, `allocator_state` and `tell_if_off`.
"""

import functools
import logging
import os
import platform
import sys

from byol_keras import compat  # imports nothing until called: TensorFlow must not start here

logger = logging.getLogger(__name__)

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
# Set beside VARIABLE, to the same value, when `use_onednn` (not the user) set it. Child processes inherit
# both, so a run started by one of our programs still records who made the choice.
SET_BY_BYOL_KERAS = "BYOL_KERAS_SET_ONEDNN"

# Issue 21, on a 2-vCPU AMD EPYC (AVX2, FMA): the BYOL step of ResNet-18 w64, B128, 32 px, fit() with
# defaults, 8.0 images/s with oneDNN off (TensorFlow's default there) and 13.1 with it on.
MEASURED_SPEEDUP = 13.1 / 8.0

ALLOCATOR_VARIABLE = "TF_CPU_ALLOCATOR_USE_BFC"
SET_ALLOCATOR_BY_BYOL_KERAS = "BYOL_KERAS_SET_BFC"  # as SET_BY_BYOL_KERAS, for ALLOCATOR_VARIABLE
ALLOCATOR_LIMIT_VARIABLE = "TF_CPU_BFC_MEM_LIMIT_IN_MB"

_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def use_onednn(environ=None, tensorflow_imported=None):
    """Turn TensorFlow's oneDNN kernels on (`TF_ENABLE_ONEDNN_OPTS=1`) unless someone already decided.

    Nothing changes when the variable is set (the user's choice, or a parent process's), when TensorFlow
    is already imported (it read the variable then), or on a CPU that is not x86 (TensorFlow's own policy
    for ARM's oneDNN build stays).

    Args:
        environ: the environment mapping to read and change. Defaults to `os.environ`.
        tensorflow_imported: bool or None, whether TensorFlow is already imported. Defaults to None
            (looked up in `sys.modules`).

    Returns:
        str, what happened: `"set"` (this call set it to "1"), `"user"` (it was set, this value wins),
        `"too late"` (TensorFlow already imported) or `"not x86"`.

    Example:

    >>> env = {}
    >>> use_onednn(env, tensorflow_imported=False), env[VARIABLE]
    ('set', '1')
    >>> use_onednn({VARIABLE: "0"}, tensorflow_imported=False)
    'user'
    """
    environ = os.environ if environ is None else environ
    if tensorflow_imported is None:
        tensorflow_imported = "tensorflow" in sys.modules
    if VARIABLE in environ:
        return "user"
    if tensorflow_imported:
        return "too late"
    if platform.machine().lower() not in _X86:
        return "not x86"
    environ[VARIABLE] = "1"
    environ[SET_BY_BYOL_KERAS] = "1"
    return "set"


def use_bfc_allocator(environ=None, runtime_started=None):
    """Make TensorFlow allocate CPU tensors from its BFC allocator (`TF_CPU_ALLOCATOR_USE_BFC=true`).

    Nothing changes when the variable is set (the user's choice, or a parent process's) or when TensorFlow's
    runtime has started (its devices, and their allocator, exist from the first operation on).

    Args:
        environ: the environment mapping to read and change. Defaults to `os.environ`.
        runtime_started: bool or None, whether TensorFlow has created its devices. Defaults to None (asked
            of TensorFlow when it is imported; not started when it is not).

    Returns:
        str, what happened: `"set"`, `"user"` (the variable was set, its value wins) or `"too late"`.

    Example:

    >>> env = {}
    >>> use_bfc_allocator(env, runtime_started=False), env[ALLOCATOR_VARIABLE]
    ('set', 'true')
    """
    environ = os.environ if environ is None else environ
    if ALLOCATOR_VARIABLE in environ:
        return "user"
    if runtime_started is None:
        runtime_started = compat.tensorflow_runtime_started()
    if runtime_started:
        return "too late"
    environ[ALLOCATOR_VARIABLE] = "true"
    environ[SET_ALLOCATOR_BY_BYOL_KERAS] = "true"
    # The BFC allocator grows as needed up to a cap, 64 GiB unless set; malloc had none but the machine's.
    environ.setdefault(ALLOCATOR_LIMIT_VARIABLE, str(max(_physical_memory_mb(), 1 << 16)))
    return "set"


def allocator_state(environ=None):
    """TensorFlow's CPU allocator in this process, and who chose it; starts TensorFlow's runtime.

    Args:
        environ: the environment mapping to read. Defaults to `os.environ`.

    Returns:
        dict, JSON-serialisable: `pooling` (bool, whether TensorFlow's allocator for CPU:0 keeps and reuses
        memory: BFC or oneDNN's, which keep statistics, as plain `malloc` does not), `TF_CPU_ALLOCATOR_USE_BFC`
        (the variable's value or None) and `set_by` (`"byol_keras"`, `"user"` or `"tensorflow default"`).
    """
    environ = os.environ if environ is None else environ
    value = environ.get(ALLOCATOR_VARIABLE)
    return {"pooling": _allocator_pools(), ALLOCATOR_VARIABLE: value,
            "set_by": _set_by(value, environ.get(SET_ALLOCATOR_BY_BYOL_KERAS))}


def _physical_memory_mb():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1 << 20)
    except (AttributeError, ValueError, OSError):  # not a POSIX system: TensorFlow's default cap
        return 0


def _set_by(value, marker):
    if value is None:
        return "tensorflow default"
    return "byol_keras" if marker == value else "user"


def _allocator_pools():
    import tensorflow as tf

    try:
        tf.config.experimental.get_memory_info("CPU:0")  # ValueError: "Allocator stats not available"
    except ValueError:
        return False
    return True


def onednn_state(environ=None):
    """Whether TensorFlow's oneDNN kernels are on in this process, and who decided; imports TensorFlow.

    Args:
        environ: the environment mapping to read. Defaults to `os.environ`.

    Returns:
        dict, JSON-serialisable: `enabled` (bool, TensorFlow's own answer, `IsMklEnabled()`),
        `TF_ENABLE_ONEDNN_OPTS` (the variable's value or None) and `set_by` (`"byol_keras"`, `"user"`, or
        `"tensorflow default"` when the variable is unset).
    """
    environ = os.environ if environ is None else environ
    value = environ.get(VARIABLE)
    return {"enabled": _enabled(), VARIABLE: value, "set_by": _set_by(value, environ.get(SET_BY_BYOL_KERAS))}


def tell_if_off(environ=None):
    """Log once, as a warning, that oneDNN is off by TensorFlow's default on this x86 CPU, and the fix.

    Silent when the variable is set (a choice, kept), when the kernels are on, on a CPU that is not x86
    and when TensorFlow sees a GPU (the step runs there).

    Args:
        environ: the environment mapping to read. Defaults to `os.environ`.

    Returns:
        str or None: the line (also logged, the first time only), or None when there is nothing to say.
    """
    environ = os.environ if environ is None else environ
    if VARIABLE in environ or _enabled() or not _x86() or _gpus():
        return None
    return _tell()


@functools.cache  # once per process
def _tell():
    line = (
        f"TensorFlow's oneDNN kernels are off: its default on CPUs without AVX-512 VNNI or AMX, and "
        f"TensorFlow was imported before byol_keras could turn them on. The BYOL step runs about "
        f"{MEASURED_SPEEDUP:.1f}x faster with them (measured on an AVX2 CPU, byol_keras/onednn.py): set "
        f"{VARIABLE}=1 in the environment, or import byol_keras before keras and tensorflow."
    )
    logger.warning(line)
    return line


def _enabled():
    return compat.onednn_enabled()  # TensorFlow's own flag; no public API has it


def _x86():
    return compat.x86()


def _gpus():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
