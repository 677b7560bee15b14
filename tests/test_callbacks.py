"""Tests for byol_keras.callbacks: the kNN monitor, the TensorBoard writers and the run's progress display."""

import doctest
import glob
import io
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from byol_keras import callbacks as byol_callbacks
from byol_keras.preprocessing import normalize
from byol_keras.views import BYOLAugment
from byol_keras.byol import BYOL
from byol_keras.knn import knn_accuracy
from byol_keras.callbacks import (
    EmbeddingProjector,
    KNNMonitor,
    StepScalars,
    ViewGrid,
    make_callbacks,
    tile_images,
    unnormalize,
)
from byol_keras.progress import RunProgress

BYOL_KEYS = {"loss", "tau", "learning_rate", "representation_std"}


class StandIn(keras.Model):
    """Stands in for BYOL: an `encoder` attribute and a `train_step` logging BYOL's keys.

    The encoder is fixed (global average pooling), so kNN answers are known; a scalar `w` trains instead.
    The logged values are functions of the global step, so event files can be checked exactly:
    `tau = step / 100`, `representation_std = 1 / step`.
    """

    def __init__(self, log_learning_rate=True):
        super().__init__()
        self.encoder = keras.Sequential([keras.layers.GlobalAveragePooling2D()], name="encoder")
        self.w = self.add_weight(shape=(), initializer="ones", name="w")
        self.log_learning_rate = log_learning_rate

    def call(self, images, training=False):
        return self.encoder(images, training=training)

    def train_step(self, data):
        view1, view2 = data[0], data[1]
        with tf.GradientTape() as tape:
            loss = ops.mean(ops.square(self.w * self.encoder(view1) - self.encoder(view2)))
        self.optimizer.apply(tape.gradient(loss, [self.w]), [self.w])
        step = ops.cast(self.optimizer.iterations, "float32")
        logs = {"loss": loss, "tau": step / 100.0, "representation_std": 1.0 / step}
        if self.log_learning_rate:
            logs["learning_rate"] = ops.cast(self.optimizer.learning_rate, "float32")
        return logs


# Every `fit` below passes `shuffle=False`: the data are tf.data datasets, for which Keras 3.15 warns
# about its default `shuffle=True`.


def _views(n=8, size=4):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, size, size, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((images, images + 0.1)).batch(2)  # n / 2 steps


def _signed_set():
    """Pooled features along +(1,1,1) for class 0 and -(1,1,1) for class 1: kNN top-1 is exactly 1."""
    values = [1.0, 2.0, 3.0, -1.0, -2.0, -3.0]
    return np.stack([np.full((4, 4, 3), v, "float32") for v in values]), np.array([0, 0, 0, 1, 1, 1])


def _compiled(model, learning_rate=0.01):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate))
    return model


def _events(log_dir):
    """{tag: [(step, value)]} of every event file under `log_dir`; image summaries give decoded images."""
    found = {}
    for path in sorted(glob.glob(os.path.join(str(log_dir), "**", "events.out.tfevents.*"), recursive=True)):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "images":
                    decoded = tf.image.decode_png(tf.make_ndarray(value.tensor)[2]).numpy()
                    found.setdefault(value.tag, []).append((event.step, decoded))
                elif value.HasField("tensor") and plugin == "scalars":
                    found.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return found


def test_docstring_examples_run():
    failures, tried = doctest.testmod(byol_callbacks, extraglobs={"np": np})
    assert tried >= 1 and failures == 0


# --- pure helpers -----------------------------------------------------------------------------------


def test_tile_images_golden():
    images = np.arange(5, dtype="float32").reshape(5, 1, 1, 1) + 1  # 1..5, one pixel each
    grid = np.asarray(tile_images(images, columns=2, padding=1, pad_value=-1.0))[..., 0]
    np.testing.assert_array_equal(
        grid,
        [[1, -1, 2, -1], [-1, -1, -1, -1], [3, -1, 4, -1], [-1, -1, -1, -1], [5, -1, -1, -1], [-1, -1, -1, -1]],
    )
    assert tile_images(np.zeros((4, 2, 3, 3)), columns=4).shape == (2, 12, 3)


def test_unnormalize_inverts_normalize():
    images = np.random.default_rng(0).integers(0, 256, size=(2, 3, 3, 3)).astype("float32")
    np.testing.assert_allclose(unnormalize(normalize(images)), images / 255.0, atol=1e-6)
    assert float(ops.max(unnormalize(np.full((1, 1, 1, 3), 99.0)))) == 1.0


# --- KNNMonitor -------------------------------------------------------------------------------------


def test_knn_monitor_writes_history_and_tensorboard(tmp_path):
    images, labels = _signed_set()
    monitor = KNNMonitor((images, labels), (images, labels), k=3, log_dir=str(tmp_path / "knn"))
    history = _compiled(StandIn()).fit(_views(), epochs=2, callbacks=[monitor], verbose=0, shuffle=False)
    assert history.history["knn_top1"] == [1.0, 1.0]
    assert monitor.initial_value == 1.0
    # TensorBoard: the value before training at step 0, then after each epoch at epochs completed.
    assert _events(tmp_path / "knn")["knn_top1"] == [(0, 1.0), (1, 1.0), (2, 1.0)]


def test_knn_monitor_every_n_epochs_and_last_epoch(tmp_path):
    images, labels = _signed_set()
    queries = (images, np.array([1, 0, 0, 1, 0, 0]))  # queries 0, 4, 5 mislabelled: top-1 is 0.5
    monitor = KNNMonitor(
        (images, labels), queries, every_n_epochs=2, k=3, log_dir=str(tmp_path), evaluate_at_start=False
    )
    model = _compiled(StandIn())
    history = model.fit(_views(), epochs=3, callbacks=[monitor], verbose=0, shuffle=False)
    # After epochs 2 and 3 (the last), not after epoch 1.
    assert history.history["knn_top1"] == [0.5, 0.5]
    assert len(history.history["loss"]) == 3
    # A resumed run continues at the number of epochs completed.
    monitor.evaluate_at_start = True
    model.fit(_views(), epochs=4, initial_epoch=3, callbacks=[monitor], verbose=0, shuffle=False)
    assert _events(tmp_path)["knn_top1"] == [(2, 0.5), (3, 0.5), (3, 0.5), (4, 0.5)]


def test_knn_monitor_must_precede_keras_tensorboard(tmp_path):
    # Keras passes one logs dict down the callback list: TensorBoard sees `knn_top1` only after it.
    images, labels = _signed_set()
    data = ((images, labels), (images, labels))
    before = [KNNMonitor(*data, k=3), keras.callbacks.TensorBoard(str(tmp_path / "before"))]
    after = [keras.callbacks.TensorBoard(str(tmp_path / "after")), KNNMonitor(*data, k=3)]
    for callbacks in (before, after):
        _compiled(StandIn()).fit(_views(), epochs=1, callbacks=callbacks, verbose=0, shuffle=False)
    assert _events(tmp_path / "before")["epoch_knn_top1"] == [(0, 1.0)]
    assert "epoch_knn_top1" not in _events(tmp_path / "after")
    assert "epoch_loss" in _events(tmp_path / "after")


def test_knn_monitor_tracks_a_changing_encoder():
    # Real encoder weights: the monitor must see them change, not a cached embedding.
    images, labels = _signed_set()
    monitor = KNNMonitor((images, labels), (images, labels), k=1, evaluate_at_start=False)
    model = StandIn()
    model.encoder = keras.Sequential([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    model.encoder.build((None, 4, 4, 3))
    monitor.set_model(model)
    first = monitor.evaluate()
    model.encoder.layers[-1].kernel.assign(np.zeros((3, 2), "float32"))
    model.encoder.layers[-1].bias.assign(np.array([1.0, 0.0], "float32"))
    # All features identical: every query ties and the first bank row (class 0) wins half the time.
    assert first == 1.0 and monitor.evaluate() == 0.5


def test_knn_monitor_requires_an_encoder():
    images, labels = _signed_set()
    model = _compiled(keras.Sequential([keras.Input((4, 4, 3)), keras.layers.GlobalAveragePooling2D()]))
    monitor = KNNMonitor((images, labels), (images, labels))
    monitor.set_model(model)
    with pytest.raises(ValueError, match="needs a model with an `encoder` attribute"):
        monitor.evaluate()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"every_n_epochs": 0}, "`every_n_epochs` must be a positive integer. Received: every_n_epochs=0"),
        ({"k": 0}, "`k` must be a positive integer. Received: k=0"),
        ({"temperature": 0.0}, "`temperature` must be positive. Received: temperature=0.0"),
    ],
)
def test_knn_monitor_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KNNMonitor(_signed_set(), _signed_set(), **kwargs)


# --- per-step scalars -------------------------------------------------------------------------------


def test_step_scalars_writes_every_step_at_the_global_step(tmp_path):
    model = _compiled(StandIn(), learning_rate=0.05)
    callback = StepScalars(str(tmp_path))
    model.fit(_views(), epochs=2, callbacks=[callback], verbose=0, shuffle=False)  # 4 steps per epoch
    # A second `fit` (like a resume) continues from the optimizer's step instead of restarting.
    model.fit(_views(), epochs=1, callbacks=[callback], verbose=0, shuffle=False)
    events = _events(tmp_path)
    assert BYOL_KEYS <= set(events)
    steps = list(range(1, 13))
    assert [step for step, _ in events["tau"]] == steps
    np.testing.assert_allclose([v for _, v in events["tau"]], np.array(steps) / 100.0, rtol=1e-6)
    np.testing.assert_allclose([v for _, v in events["representation_std"]], 1.0 / np.array(steps), rtol=1e-6)
    np.testing.assert_allclose([v for _, v in events["learning_rate"]], [0.05] * 12, rtol=1e-6)


def test_step_scalars_reads_learning_rate_from_the_optimizer_and_subsamples(tmp_path):
    schedule = keras.optimizers.schedules.PolynomialDecay(0.1, decay_steps=4, end_learning_rate=0.0)
    model = StandIn(log_learning_rate=False)
    model.compile(optimizer=keras.optimizers.SGD(schedule))
    model.fit(_views(), epochs=1, callbacks=[StepScalars(str(tmp_path), every_n_steps=2)], verbose=0, shuffle=False)
    events = _events(tmp_path)
    assert [step for step, _ in events["loss"]] == [2, 4]
    # The rate of the *next* step, read after the update: 0.1 · (1 − step / 4).
    np.testing.assert_allclose([v for _, v in events["learning_rate"]], [0.05, 0.0], atol=1e-7)


def test_step_scalars_keys_filter(tmp_path):
    model = _compiled(StandIn())
    model.fit(_views(), epochs=1, callbacks=[StepScalars(str(tmp_path), keys=["tau"])], verbose=0, shuffle=False)
    assert set(_events(tmp_path)) == {"tau"}
    with pytest.raises(TypeError, match="`keys` must be a list of strings or None"):
        StepScalars(str(tmp_path), keys="tau")


def test_keras_tensorboard_batch_scalars_restart_at_each_fit(tmp_path):
    # What Keras 3.15 does on its own, and why StepScalars exists: `update_freq=1` writes every log as
    # `batch_<name>`, but its step counter restarts at each `fit`, so a resumed run overwrites its curves.
    model = _compiled(StandIn())
    for _ in range(2):
        model.fit(_views(), epochs=1, callbacks=[keras.callbacks.TensorBoard(str(tmp_path), update_freq=1)], verbose=0, shuffle=False)
    events = _events(tmp_path)
    assert {f"batch_{key}" for key in BYOL_KEYS} <= set(events)
    assert [step for step, _ in events["batch_tau"]] == [1, 2, 3, 4, 1, 2, 3, 4]


# --- images: view grid and projector ----------------------------------------------------------------


def test_view_grid_writes_both_views(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 6, 6, 3)).astype("uint8")

    def augment(batch):
        # Deterministic stand-in views: the image itself and its negative.
        batch = ops.cast(batch, "float32")
        return normalize(batch), normalize(255.0 - batch)

    callback = ViewGrid(str(tmp_path), images, augment, padding=2)
    _compiled(StandIn()).fit(_views(), epochs=1, callbacks=[callback], verbose=0, shuffle=False)
    (step, grid), = _events(tmp_path)["views"]
    assert step == 0 and grid.shape == (3 * 8, 3 * 8, 3)
    expected = images.astype("float32")
    tile = lambda row, col: grid[row * 8 : row * 8 + 6, col * 8 : col * 8 + 6].astype("float32")  # noqa: E731
    for row in range(3):
        np.testing.assert_allclose(tile(row, 0), expected[row], atol=1.0)
        np.testing.assert_allclose(tile(row, 1), expected[row], atol=1.0)
        np.testing.assert_allclose(tile(row, 2), 255.0 - expected[row], atol=1.0)
    assert np.all(grid[6:8] == 255)  # white padding between rows


def test_view_grid_with_the_real_augmentation(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(2, 12, 12, 3)).astype("uint8")
    grid = ViewGrid(str(tmp_path), images, BYOLAugment(8, blur=False, seed=0)).make_grid()
    assert grid.shape == (2 * 10, 3 * 10, 3) and grid.min() >= 0.0 and grid.max() <= 1.0
    # Random crops, flips and colours: the two views of an image differ.
    assert not np.allclose(grid[:8, 10:18], grid[:8, 20:28])


def test_view_grid_rejects_a_single_view():
    images = np.zeros((2, 4, 4, 3), "uint8")
    with pytest.raises(TypeError, match="`augment` must return the two views"):
        ViewGrid("unused", images, lambda batch: normalize(batch)).make_grid()
    with pytest.raises(TypeError, match="`augment` must be callable"):
        ViewGrid("unused", images, augment=None)


def test_embedding_projector_writes_projector_files(tmp_path):
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 4, 4, 3)).astype("uint8")
    labels = np.array([0, 1, 2, 1, 0])
    callback = EmbeddingProjector(str(tmp_path), images, labels, class_names=["cat", "dog", "emu"])
    model = _compiled(StandIn())
    model.fit(_views(), epochs=1, callbacks=[callback], verbose=0, shuffle=False)

    assert (tmp_path / "metadata.tsv").read_text().splitlines() == [
        "label\tclass", "0\tcat", "1\tdog", "2\temu", "1\tdog", "0\tcat"
    ]
    config = text_format.Parse((tmp_path / "projector_config.pbtxt").read_text(), projector.ProjectorConfig())
    (embedding,) = config.embeddings
    assert embedding.metadata_path == "metadata.tsv" and embedding.sprite.image_path == "sprite.png"
    assert list(embedding.sprite.single_image_dim) == [4, 4]
    # The checkpoint holds the encoder's features of the normalised images, under the configured name.
    # No absolute path in the config (TensorBoard finds the run's newest checkpoint), and an event file.
    assert not config.model_checkpoint_path
    assert list(tmp_path.glob("events.out.tfevents.*"))
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
    stored = reader.get_tensor(embedding.tensor_name)
    np.testing.assert_allclose(stored, normalize(images).numpy().mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    # Sprite: a 3 x 3 grid of 4-pixel tiles, row by row.
    sprite = tf.image.decode_png(tf.io.read_file(str(tmp_path / "sprite.png"))).numpy()
    assert sprite.shape == (12, 12, 3)
    np.testing.assert_array_equal(sprite[0:4, 4:8], images[1])
    np.testing.assert_array_equal(sprite[4:8, 0:4], images[3])


def test_embedding_projector_validates():
    images = np.zeros((3, 4, 4, 3), "uint8")
    with pytest.raises(ValueError, match="len\\(images\\)=3, len\\(labels\\)=2"):
        EmbeddingProjector("unused", images, [0, 1])
    with pytest.raises(ValueError, match="`class_names` must name every label up to 2"):
        EmbeddingProjector("unused", images, [0, 1, 2], class_names=["a", "b"])
    with pytest.raises(ValueError, match="8192 x 8192"):
        EmbeddingProjector("unused", np.zeros((4, 8, 8, 3), "uint8"), [0] * 4, thumbnail_size=5000)


# --- the factory and the real model -----------------------------------------------------------------


def test_make_callbacks_assembles_composable_pieces(tmp_path):
    images, labels = _signed_set()
    uint8_images = np.zeros((2, 4, 4, 3), "uint8")
    callbacks = make_callbacks(
        str(tmp_path), knn_bank=(images, labels), knn_queries=(images, labels), knn_k=3,
        view_images=uint8_images, augment=lambda x: (normalize(x), normalize(x)),
        projector_images=uint8_images, projector_labels=[0, 1],
    )
    assert [type(c).__name__ for c in callbacks] == [
        "TensorBoard", "StepScalars", "KNNMonitor", "ViewGrid", "EmbeddingProjector"
    ]
    _compiled(StandIn()).fit(_views(), epochs=1, callbacks=callbacks, verbose=0, shuffle=False)
    assert "epoch_loss" in _events(tmp_path / "train")
    assert BYOL_KEYS <= set(_events(tmp_path / "steps"))
    assert _events(tmp_path / "knn")["knn_top1"] == [(0, 1.0), (1, 1.0)]
    assert "views" in _events(tmp_path / "views")
    assert (tmp_path / "projector" / "projector_config.pbtxt").exists()
    with pytest.raises(ValueError, match="`knn_bank` and `knn_queries` must be given together"):
        make_callbacks(str(tmp_path), knn_bank=(images, labels))
    with pytest.raises(ValueError, match="`augment` is required with `view_images`"):
        make_callbacks(str(tmp_path), view_images=uint8_images)


def test_with_the_real_byol_model(tmp_path):
    encoder = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()]
    )
    model = BYOL(encoder, projection_dim=4, projection_hidden_dim=8, prediction_hidden_dim=8)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(0)
    bank = (rng.normal(size=(6, 8, 8, 3)).astype("float32"), np.array([0, 1, 2] * 2))
    queries = (rng.normal(size=(8, 8, 8, 3)).astype("float32"), np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    views = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    history = model.fit(
        tf.data.Dataset.from_tensor_slices((views, views[::-1])).batch(2),
        epochs=1,
        callbacks=[KNNMonitor(bank, queries, k=2), StepScalars(str(tmp_path))],
        verbose=0,
        shuffle=False,
    )
    # The monitor classified with BYOL's online encoder as the epoch ended.
    assert history.history["knn_top1"] == [pytest.approx(knn_accuracy(model.encoder, bank, queries, k=2))]
    events = _events(tmp_path)
    assert BYOL_KEYS <= set(events)
    assert [step for step, _ in events["loss"]] == [1, 2]


# RunProgress: the whole run as one bar on a terminal, a few plain lines in a log file


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _fit_with(callback, epochs, steps_per_epoch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((4 * steps_per_epoch, 2), "float32")
    model.fit(x, x[:, :1], batch_size=4, epochs=epochs, callbacks=[callback], verbose=0)


def test_run_progress_writes_a_few_plain_lines_to_a_log_file():
    stream = io.StringIO()  # not a terminal
    _fit_with(RunProgress(stream=stream), epochs=45, steps_per_epoch=2)
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # After the first epoch, every ceil(45 / RunProgress.LINES) = 3rd, and the last: 16 lines, not 45 bars.
    assert [line.split()[1] for line in lines] == ["1/45"] + [f"{epoch}/45" for epoch in range(3, 46, 3)]
    assert lines[0].startswith("epoch  1/45  step  2/90  ")
    assert lines[-1].startswith("epoch 45/45  step 90/90  ") and "  loss " in lines[-1]

    stream = io.StringIO()
    _fit_with(RunProgress(every_n_epochs=4, stream=stream), epochs=10, steps_per_epoch=1)
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == ["1/10", "4/10", "8/10", "10/10"]


def test_run_progress_draws_one_bar_for_the_run_on_a_terminal():
    stream = _Terminal()
    _fit_with(RunProgress(stream=stream, interval=0), epochs=5, steps_per_epoch=2)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one bar, redrawn in place, ended once
    frames = text[:-1].split("\r")[1:]
    assert len(frames) == 5 * 2 + 5  # after every step and every epoch (interval 0)
    assert frames[0].startswith("epoch 1/5  [" + "=" * 2 + " " * 22 + "]  step  1/10  ")
    assert " left" in frames[0] and "  loss " in frames[0]
    assert frames[-1].startswith("epoch 5/5  [" + "=" * 24 + "]  step 10/10  ") and " left" not in frames[-1]
    # A shorter frame pads over the end of the longer one before it.
    assert all(len(b) >= len(a.rstrip()) for a, b in zip(frames, frames[1:]))


def test_run_progress_validates():
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        RunProgress(every_n_epochs=0)
    with pytest.raises(ValueError, match="interval=-1"):
        RunProgress(interval=-1)
