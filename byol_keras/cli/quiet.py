"""TensorFlow started for a command without its start-up log on the console, unless the user asks for it.

Importing TensorFlow 2.21 writes its C++ start-up lines to stderr before its log level applies: absl's
"WARNING: All log messages before absl::InitializeLog() ...", `I0000 ... port.cc] oneDNN custom operations are
on`, `I0000 ... cudart_stub.cc] Could not find cuda drivers`, `cpu_feature_guard`'s two lines, and (when the
devices are listed) `E0000 ... failed call to cuInit` on a machine without a GPU driver. They come twice: the
profiler's extension (`tensorflow.python.profiler.internal._pywrap_profiler_plugin`, loaded by `import
tensorflow` itself) carries its own copy of TensorFlow's static initialisers and of absl's log, and prints them
again when it loads. Neither `TF_CPP_MIN_LOG_LEVEL` nor anything else set beforehand silences those early
lines (they are written before TensorFlow reads it).

`start_tensorflow` therefore imports TensorFlow and lists its devices with stderr (the file descriptor)
caught, then writes back every caught line that is not one of those start-up lines: Python warnings, and
TensorFlow's own warnings and errors, still reach the console. For the rest of the process it sets
`TF_CPP_MIN_LOG_LEVEL=1` (TensorFlow's C++ INFO lines off, its warnings and errors on), unless the variable is
set: the user's own value wins, and then nothing is caught. `--debug` shows everything.

Only the commands call it (`byol_keras.cli.run`), before anything imports TensorFlow: `import byol_keras`
changes no logging of the program that imports it.
"""

import os
import re
import sys

VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "1"  # TensorFlow's C++ INFO lines off; its warnings (W) and errors (E) still shown
# Set beside VARIABLE when `start_tensorflow` (not the user) set it: a child process that inherits both is
# still quiet, and does not take our value for the user's.
SET_BY_BYOL_KERAS = "BYOL_KERAS_SET_TF_LOG_LEVEL"

# TensorFlow's start-up lines, as it writes them before its log level applies.
START_UP_LINES = (
    re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(r"I\d{4} "),  # C++ INFO lines: oneDNN on, no CUDA driver, the CPU's instructions
    re.compile(r"To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags"),
)
NO_DRIVER = re.compile(r"Could not find cuda drivers on your machine")
# The error a machine without a GPU driver gets when the devices are listed: not an error there (the run says
# which devices it uses). With a driver installed the same line is a real problem, and is shown.
CUINIT_FAILED = re.compile(r"E\d{4} .*failed call to cuInit")


def start_tensorflow(show_log=False, environ=None):
    """Import TensorFlow and list its devices, its start-up lines kept off stderr unless asked for.

    Args:
        show_log: bool, show TensorFlow's log as TensorFlow writes it (`--debug`). Defaults to False.
        environ: the environment mapping to read and change. Defaults to `os.environ`.

    Returns:
        str, what happened: `"quiet"` (the start-up lines were dropped, `TF_CPP_MIN_LOG_LEVEL=1` set),
        `"shown"` (`show_log`, or the user's own `TF_CPP_MIN_LOG_LEVEL`: nothing dropped) or `"too late"`
        (TensorFlow was already imported: nothing changed).
    """
    environ = os.environ if environ is None else environ
    if "tensorflow" in sys.modules:
        return "too late"
    ours = environ.get(SET_BY_BYOL_KERAS) is not None and environ.get(SET_BY_BYOL_KERAS) == environ.get(VARIABLE)
    if show_log or (VARIABLE in environ and not ours):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
        return "shown"
    environ[VARIABLE] = environ[SET_BY_BYOL_KERAS] = QUIET_LEVEL
    with _stderr_caught() as caught:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    kept = kept_lines(caught.lines())
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()
    return "quiet"


def kept_lines(lines):
    """The lines of TensorFlow's start-up that are not its start-up noise (`START_UP_LINES`, and a failed
    cuInit where the same start-up found no CUDA driver), in order, each with its line end."""
    no_driver = any(NO_DRIVER.search(line) for line in lines)
    return [line for line in lines
            if not any(pattern.match(line) for pattern in START_UP_LINES)
            and not (no_driver and CUINIT_FAILED.match(line))]


class _stderr_caught:
    """Within the block, file descriptor 2 (C++ and Python alike) writes to a temporary file; `lines()` after it.
    A file rather than a pipe: no reader thread, and no writer blocked on a full pipe."""

    def __enter__(self):
        import tempfile  # here: `--help` never needs it

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc_info):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self._text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        if exc_info[0] is not None and self._text:  # the import failed: everything it wrote, unfiltered
            sys.stderr.write(self._text)
            sys.stderr.flush()
        return False

    def lines(self):
        return self._text.splitlines(keepends=True)
