"""The progress of a whole pretraining run on the console: `RunProgress`, one bar on a terminal, a line every
few epochs in a log file."""

import math
import shutil
import sys
import time

import keras

from byol_keras.validation import check_positive_int


class RunProgress(keras.callbacks.Callback):
    """The progress of a whole `fit`: one bar on a terminal, a line every few epochs in a log file.

    For runs of many short epochs, in place of Keras' display (use with `fit(..., verbose=0)`). Keras draws a
    bar per epoch, and redraws it with carriage returns even into a file (its `Progbar` counts any POSIX
    system as a terminal): the demo's 200 epochs of 11 steps wrote 936 KB of bars, which buried its result.

    - On a terminal (`stream.isatty()`): a single bar over all the run's steps, redrawn in place at most
      every `interval` seconds: epoch, steps, time left and the latest logs.
    - Elsewhere (a file, a pipe): one plain line after the first epoch, after every `every_n_epochs`-th and
      after the last, with the epoch's logs and the time since the start; never a carriage return.

    The logs shown are those Keras hands to the callbacks placed before this one, so a `KNNMonitor` listed
    earlier has its value in the lines (and, once measured, on the bar); `loss` and `knn_top1` come first.

    Args:
        every_n_epochs: int or None, epochs between lines when not on a terminal. Defaults to None: about
            `LINES` lines for the whole run.
        stream: text file or None, where to write. Defaults to None: `sys.stdout` when training starts.
        bar: bool or None, draw the bar (True) or write lines (False). Defaults to None: `stream.isatty()`.
        interval: float >= 0, minimum seconds between two redraws of the bar. Defaults to 0.1.
    """

    LINES = 20
    BAR_WIDTH = 24
    FIRST = ("loss", "knn_top1")  # then the other logs, by name

    def __init__(self, every_n_epochs=None, stream=None, bar=None, interval=0.1):
        super().__init__()
        if every_n_epochs is not None:
            check_positive_int("every_n_epochs", every_n_epochs)
        if not interval >= 0:
            raise ValueError(f"`interval` must be >= 0. Received: interval={interval!r}")
        self.every_n_epochs = every_n_epochs
        self.stream = stream
        self.bar = bar
        self.interval = interval

    def on_train_begin(self, logs=None):
        self._stream = self.stream if self.stream is not None else sys.stdout
        is_terminal = getattr(self._stream, "isatty", lambda: False)()
        self._bar = is_terminal if self.bar is None else bool(self.bar)
        params = self.params or {}
        self._epochs = params.get("epochs") or 1
        self._steps = params.get("steps")  # per epoch; None when Keras does not know it
        self._every = self.every_n_epochs or max(1, math.ceil(self._epochs / self.LINES))
        self._started = time.monotonic()
        self._first_epoch = None  # of this `fit`: a resumed run starts later
        self._last_draw = None
        self._drawn_width = 0
        self._logs = {}

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._first_epoch is None:
            self._first_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not self._bar:
            return
        self._logs.update(logs or {})
        now = time.monotonic()
        if self._last_draw is None or now - self._last_draw >= self.interval:
            self._draw(self._epoch, batch + 1, now)

    def on_epoch_end(self, epoch, logs=None):
        self._logs.update(logs or {})
        if self._bar:
            self._draw(epoch, self._steps, time.monotonic())
            return
        if epoch == self._first_epoch or (epoch + 1) % self._every == 0 or epoch + 1 == self._epochs:
            self._stream.write(self._status(epoch, self._steps, time.monotonic(), dict(logs or {})) + "\n")
            self._stream.flush()

    def on_train_end(self, logs=None):
        if self._bar and self._drawn_width:
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, epoch, batches, now):
        text = self._status(epoch, batches, now, self._logs, bar=True)
        # Pad over the end of a longer previous line: a carriage return does not clear it.
        self._stream.write("\r" + text.ljust(self._drawn_width))
        self._stream.flush()
        self._drawn_width = len(text)
        self._last_draw = now

    def _status(self, epoch, batches, now, logs, bar=False):
        """`epoch E/N  [bar]  step S/T  time  key value ...` after `batches` steps of epoch index `epoch`."""
        parts = [f"epoch {epoch + 1:>{len(str(self._epochs))}}/{self._epochs}"]
        elapsed = now - self._started
        clock = _duration(elapsed)
        if self._steps:
            total = self._epochs * self._steps
            step = epoch * self._steps + (batches or 0)
            if bar:
                filled = int(self.BAR_WIDTH * step / total)
                parts.append("[" + "=" * filled + " " * (self.BAR_WIDTH - filled) + "]")
                done = step - self._first_epoch * self._steps  # steps of this `fit`, which the clock timed
                if 0 < done and step < total:
                    clock = _duration(elapsed * (total - step) / done) + " left"
            parts.append(f"step {step:>{len(str(total))}}/{total}")
        parts.append(clock)
        first = [key for key in self.FIRST if key in logs]
        for key in first + sorted(set(logs) - set(first)):
            if _number(logs[key]) is not None:
                parts.append(f"{key} {_number(logs[key])}")
        text = "  ".join(parts)
        if bar:
            # A bar longer than the terminal would wrap, and the carriage return would redraw only its last row.
            text = text[: max(shutil.get_terminal_size().columns - 1, 20)]
        return text


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
