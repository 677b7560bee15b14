"""What every benchmark script prints: one JSON line per figure, with machine, versions, config and oneDNN.

Not a benchmark itself. The scripts in this package import it as `from benchmarks import report` and run
from the repository root as modules: `python -m benchmarks.step ...`.
"""

import json
import os
import platform
import resource
import statistics

# Before any benchmark imports TensorFlow (each imports this module first): quiet start-up logs, and
# importing byol_keras turns TensorFlow's oneDNN kernels on unless TF_ENABLE_ONEDNN_OPTS is set; every
# figure records which (`emit`).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from byol_keras import onednn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CIFAR = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cifar10"))
# Where the peer (lightly on PyTorch) lives: its virtual environment's Python and the folder of its scripts
# (`peer_step.py`, `peer_augment.py`). Flags of the peer benchmarks (`--peer-python`, `--peer-dir`); these are only
# their defaults: the environment variables, else the set-up of `../shared/bench/README.md` (a venv in /tmp/peer,
# the scripts in a `shared/bench` folder beside the clone).
PEER_PYTHON = os.environ.get("BYOL_PEER_PYTHON", "/tmp/peer/bin/python")
PEER_DIR = os.environ.get("BYOL_PEER_DIR", os.path.normpath(os.path.join(ROOT, "..", "shared", "bench")))


def set_threads(threads, inter_threads=None):
    """Pin TensorFlow's thread pools before TensorFlow runs anything (the peer's `torch.set_num_threads`).

    Args:
        threads: int, intra-op threads (the one that matters for convolutions and matmuls).
        inter_threads: int or None, inter-op threads; None gives the pool `threads` as well, 0 leaves
            TensorFlow's own choice.
    """
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads if inter_threads is None else inter_threads)


def peak_rss_mb():
    """Peak resident memory of this process so far, in MiB (`ru_maxrss` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine():
    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    info["simd"] = [f for f in ("avx2", "fma", "avx512f", "amx_tile") if f in flags]
                    break
    except OSError:
        pass
    return info


def versions():
    import keras
    import tensorflow as tf

    result = {"tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        import keras_cv

        result["keras_cv"] = keras_cv.__version__
    except ImportError:
        pass
    return result


def summary(values):
    """Median, min, max (and the raw values) of a list of per-run measurements."""
    values = [float(v) for v in values]
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": [round(v, 3) for v in values],
    }


def emit(benchmark, config, values, unit, **extra):
    """Print one JSON line: benchmark name, machine, versions, config, median/min/max of `values`."""
    line = {
        "benchmark": benchmark,
        "unit": unit,
        **summary(values),
        "config": config,
        **extra,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "machine": machine(),
        "versions": versions(),
        "onednn": onednn.onednn_state(),
        "cpu_allocator": onednn.allocator_state(),
    }
    print(json.dumps(line), flush=True)
    return line
