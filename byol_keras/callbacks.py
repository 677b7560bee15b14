"""What a practitioner watches while BYOL trains: the kNN monitor and TensorBoard views (the terminal's
progress bar is `byol_keras.progress.RunProgress`).

- `KNNMonitor` puts the weighted-kNN top-1 of the online encoder into the epoch logs (so the progress bar
  and `History` show it) and, with a `log_dir`, into TensorBoard, including the value before training.
- `StepScalars` writes every step's logs (loss, τ, learning rate, `representation_std`) to TensorBoard
  at the optimizer's global step.
- `ViewGrid` shows both augmented views of a few images once, at the start of training.
- `EmbeddingProjector` writes the TensorBoard projector files for a labelled sample at the end.
- `make_callbacks` assembles them with Keras' `TensorBoard` (epoch scalars, optional profiling).

How Keras 3.15 hands logs to callbacks (read in `keras/src/callbacks/callback_list.py` and
`tensorboard.py`): `CallbackList.on_epoch_end` builds one dict and passes that same object to every
callback in list order, then to `History` and the progress bar, which it appends last. A key that
`KNNMonitor` adds is therefore seen by `History`, the progress bar and every callback after it, but not
by a `keras.callbacks.TensorBoard` placed before it. Keras' `TensorBoard(update_freq=1)` does write every
batch log as `batch_<name>`, but its step counter restarts at 0 on every `fit` call (also on a resume
with `initial_epoch`), and with `update_freq="epoch"` nothing per step is written; `StepScalars` uses
the optimizer's `iterations` instead, which a checkpoint restores.
"""

import math
import os

import keras
import numpy as np
from keras import ops

from byol_keras.preprocessing import channel_stats, normalize
from byol_keras.embedding import embed
from byol_keras.knn import knn_accuracy
from byol_keras.validation import check_positive_int


def _global_step(model, fallback):
    # The optimizer's step counter is the run's global step: it survives a resume from a checkpoint,
    # unlike a per-`fit` batch counter.
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and hasattr(optimizer, "iterations"):
        return int(ops.convert_to_numpy(optimizer.iterations))
    return fallback


def unnormalize(images):
    """Undo `byol_keras.preprocessing.normalize`: ImageNet-standardised images back to [0, 1], clipped.

    Args:
        images: float tensor `(batch, h, w, channels)`, standardised as `normalize` does for its channels (3:
            ImageNet's per-channel values; 1: their average, `channel_stats`).

    Returns:
        float32 tensor `(batch, h, w, channels)` in [0, 1].
    """
    mean, std = channel_stats(images.shape[-1] or 3)
    mean = ops.convert_to_tensor(mean, dtype="float32")
    std = ops.convert_to_tensor(std, dtype="float32")
    return ops.clip(ops.cast(images, "float32") * std + mean, 0.0, 1.0)


def tile_images(images, columns, padding=0, pad_value=0.0):
    """Tile a batch of equally sized images into one image, row by row.

    Missing cells of the last row are filled with `pad_value`; `padding` pixels of `pad_value` separate
    the tiles (and follow the last row and column).

    Example:

    >>> tuple(tile_images(np.zeros((5, 2, 3, 1)), columns=2, padding=1).shape)
    (9, 8, 1)

    Args:
        images: tensor `(n, h, w, c)`.
        columns: int, tiles per row.
        padding: int, pixels between tiles. Defaults to 0.
        pad_value: float, fill value. Defaults to 0.0.

    Returns:
        tensor `(rows·(h + padding), columns·(w + padding), c)`, `rows = ceil(n / columns)`, with the
        dtype of `images`.
    """
    check_positive_int("columns", columns)
    n, height, width, channels = ops.shape(images)
    rows = max(1, math.ceil(n / columns))
    images = ops.pad(
        images,
        [(0, rows * columns - n), (0, padding), (0, padding), (0, 0)],
        constant_values=pad_value,
    )
    height, width = height + padding, width + padding
    grid = ops.reshape(images, (rows, columns, height, width, channels))
    grid = ops.transpose(grid, (0, 2, 1, 3, 4))  # (rows, h, columns, w, c)
    return ops.reshape(grid, (rows * height, columns * width, channels))


def _as_pair(views):
    if isinstance(views, dict):
        views = tuple(views.values())
    if not isinstance(views, (tuple, list)) or len(views) != 2:
        raise TypeError(
            "`augment` must return the two views `(view1, view2)`. "
            f"Received: {type(views).__name__} of length {len(views) if hasattr(views, '__len__') else '?'}"
        )
    return views


def _make_writer(log_dir):
    import tensorflow as tf

    return tf.summary.create_file_writer(os.fspath(log_dir))


class KNNMonitor(keras.callbacks.Callback):
    """Weighted-kNN top-1 of `model.encoder` on a labelled bank and query set, every N epochs.

    The encoder runs in inference mode (`training=False`). The accuracy goes into the epoch `logs` under
    `name`, so the progress bar and `History` show it (Keras passes one logs dict down the callback list
    and appends `History` last). A `keras.callbacks.TensorBoard` placed *after* this callback also writes
    it, as `epoch_<name>`; with `log_dir` this callback writes it itself, as `<name>` at the number of
    epochs completed, including the value before the first epoch (the random-init floor, at step 0 of a
    fresh run) when `evaluate_at_start` is True.

    Args:
        bank: labelled memory bank: `(images, labels)` arrays or a `tf.data.Dataset` of
            `(images, labels)`; images preprocessed (ImageNet-normalised float32).
        queries: labelled queries, same forms as `bank`.
        every_n_epochs: int, evaluate after every N-th epoch and after the last. Defaults to 1.
        k: int, neighbours. Defaults to 200.
        temperature: float > 0, vote temperature. Defaults to 0.1.
        log_dir: str or None, TensorBoard directory for this callback's own scalars. Defaults to None.
        batch_size: int, images per forward pass. Defaults to 256.
        num_classes: int or None. Defaults to None (inferred from the labels).
        evaluate_at_start: bool, also evaluate before the first epoch of each `fit`. Defaults to True.
        name: str, the logs key and TensorBoard tag. Defaults to "knn_top1".
        verbose: int, 1 prints the value before training. Defaults to 0.
    """

    def __init__(
        self,
        bank,
        queries,
        every_n_epochs=1,
        k=200,
        temperature=0.1,
        log_dir=None,
        batch_size=256,
        num_classes=None,
        evaluate_at_start=True,
        name="knn_top1",
        verbose=0,
    ):
        super().__init__()
        check_positive_int("every_n_epochs", every_n_epochs)
        check_positive_int("k", k)
        check_positive_int("batch_size", batch_size)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be positive. Received: temperature={temperature!r}")
        self.bank = bank
        self.queries = queries
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.temperature = temperature
        self.log_dir = log_dir
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.evaluate_at_start = evaluate_at_start
        self.name = name
        self.verbose = verbose
        self.initial_value = None
        self._writer = None
        self._first_epoch_of_fit = True

    def _encoder(self):
        encoder = getattr(self.model, "encoder", None)
        if encoder is None:
            raise ValueError(
                "`KNNMonitor` needs a model with an `encoder` attribute (such as `byol_keras.byol.BYOL`). "
                f"Received: model={type(self.model).__name__} without `encoder`"
            )
        return encoder

    def evaluate(self):
        """Run the kNN classifier now with the current encoder.

        Returns:
            Python float, top-1 accuracy in [0, 1].
        """
        return knn_accuracy(
            self._encoder(),
            self.bank,
            self.queries,
            k=self.k,
            temperature=self.temperature,
            batch_size=self.batch_size,
            num_classes=self.num_classes,
        )

    def _write(self, value, epochs_completed):
        if self._writer is None:
            return
        import tensorflow as tf

        with self._writer.as_default():
            tf.summary.scalar(self.name, value, step=epochs_completed)
        self._writer.flush()

    def on_train_begin(self, logs=None):
        if self.log_dir is not None and self._writer is None:
            self._writer = _make_writer(self.log_dir)
        self._first_epoch_of_fit = True

    def on_epoch_begin(self, epoch, logs=None):
        # Evaluated here, not in `on_train_begin`, because only here is the first epoch index known
        # (`initial_epoch` on a resume), which is the number of epochs already completed.
        if self._first_epoch_of_fit and self.evaluate_at_start:
            self.initial_value = self.evaluate()
            self._write(self.initial_value, epoch)
            if self.verbose:
                print(f"{self.name} before epoch {epoch + 1}: {self.initial_value:.4f}")
        self._first_epoch_of_fit = False

    def on_epoch_end(self, epoch, logs=None):
        last_epoch = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every_n_epochs != 0 and epoch + 1 != last_epoch:
            return
        value = self.evaluate()
        if logs is not None:
            logs[self.name] = value
        self._write(value, epoch + 1)

    def on_train_end(self, logs=None):
        self.release()

    def release(self):
        """Close the writer (its events flushed); `BYOL.fit` calls it however `fit` ends."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class StepScalars(keras.callbacks.Callback):
    """Write the per-step training logs to TensorBoard at the optimizer's global step.

    Every `every_n_steps` optimizer steps, each log value (for BYOL: `loss`, `tau`, `learning_rate`,
    `representation_std`, `probe_accuracy`) becomes a scalar tagged with its key. `learning_rate` is
    read from the optimizer when the logs lack it. The step is `model.optimizer.iterations` after the
    update, so a resumed run continues its curves instead of overwriting them.

    Args:
        log_dir: str, TensorBoard directory.
        every_n_steps: int. Defaults to 1.
        keys: list of str or None, the log keys to write. Defaults to None (all).
    """

    def __init__(self, log_dir, every_n_steps=1, keys=None):
        super().__init__()
        check_positive_int("every_n_steps", every_n_steps)
        if keys is not None and (isinstance(keys, str) or not all(isinstance(k, str) for k in keys)):
            raise TypeError(f"`keys` must be a list of strings or None. Received: keys={keys!r}")
        self.log_dir = log_dir
        self.every_n_steps = every_n_steps
        self.keys = None if keys is None else list(keys)
        self._writer = None
        self._batches = 0

    def on_train_begin(self, logs=None):
        if self._writer is None:
            self._writer = _make_writer(self.log_dir)

    def _learning_rate(self):
        optimizer = getattr(self.model, "optimizer", None)
        # A LossScaleOptimizer wraps the one that owns the schedule.
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        if optimizer is None or not hasattr(optimizer, "learning_rate"):
            return None
        return float(ops.convert_to_numpy(optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        step = _global_step(self.model, self._batches)
        if step % self.every_n_steps != 0:
            return
        import tensorflow as tf

        values = dict(logs or {})
        if "learning_rate" not in values and (self.keys is None or "learning_rate" in self.keys):
            learning_rate = self._learning_rate()
            if learning_rate is not None:
                values["learning_rate"] = learning_rate
        with self._writer.as_default():
            for key, value in values.items():
                if self.keys is not None and key not in self.keys:
                    continue
                tf.summary.scalar(key, float(value), step=step)

    def on_epoch_end(self, epoch, logs=None):
        self._writer.flush()

    def on_train_end(self, logs=None):
        self.release()

    def release(self):
        """Close the writer (its events flushed); `BYOL.fit` calls it however `fit` ends."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ViewGrid(keras.callbacks.Callback):
    """At the start of training, write one image: each row an original image and its two BYOL views.

    Args:
        log_dir: str, TensorBoard directory.
        images: uint8 (or float in [0, 255]) array `(n, h, w, 3)`, or `(n, h, w, 1)` for grayscale images kept
            as one channel; a few images (8 is plenty).
        augment: callable `images -> (view1, view2)` returning normalised float32 views `(n, size, size,
            channels)` (`normalize`), such as the pretraining augmentation of `byol_keras.views`.
        name: str, the image summary tag. Defaults to "views".
        padding: int, pixels between tiles. Defaults to 2.
    """

    def __init__(self, log_dir, images, augment, name="views", padding=2):
        super().__init__()
        if not callable(augment):
            raise TypeError(f"`augment` must be callable. Received: augment={augment!r}")
        if np.ndim(images) != 4 or np.shape(images)[-1] not in (1, 3):
            raise ValueError(
                "`images` must be a batch of RGB images (n, h, w, 3) or grayscale images (n, h, w, 1). "
                f"Received: images.shape={np.shape(images)}"
            )
        self.log_dir = log_dir
        self.images = images
        self.augment = augment
        self.name = name
        self.padding = padding
        self.grid = None

    def make_grid(self):
        """Augment `images` once and tile originals, view 1 and view 2 side by side.

        Returns:
            float32 array `(rows, cols, channels)` in [0, 1], one row of three tiles per image.
        """
        view1, view2 = _as_pair(self.augment(ops.convert_to_tensor(self.images)))
        view1, view2 = unnormalize(view1), unnormalize(view2)
        size = ops.shape(view1)[1:3]
        originals = ops.image.resize(ops.cast(self.images, "float32") / 255.0, size)
        originals = ops.clip(originals, 0.0, 1.0)
        # (n, 3, h, w, c) -> (3n, h, w, c): original, view 1, view 2 of each image in a row.
        triples = ops.stack([originals, view1, view2], axis=1)
        triples = ops.reshape(triples, (-1, *ops.shape(view1)[1:]))
        grid = tile_images(triples, columns=3, padding=self.padding, pad_value=1.0)
        return ops.convert_to_numpy(grid)

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        self.grid = self.make_grid()
        writer = _make_writer(self.log_dir)
        with writer.as_default():
            tf.summary.image(self.name, self.grid[None], step=_global_step(self.model, 0))
        writer.close()


class EmbeddingProjector(keras.callbacks.Callback):
    """At the end of training, write the TensorBoard projector files for a labelled sample.

    Writes into `log_dir`: `sprite.png` (the thumbnails), `metadata.tsv` (label and class name per
    point), a TF checkpoint `embedding.ckpt-*` holding the `(n, dim)` features of `model.encoder` in
    inference mode, `projector_config.pbtxt` tying them together, and an event file with a one-line
    text summary (TensorBoard looks for projector files only in folders that hold event files). (Keras 3's own
    `TensorBoard(embeddings_freq=...)` saves `.weights.h5` files, which the projector cannot read.)

    Args:
        log_dir: str, TensorBoard directory.
        images: uint8 (or float in [0, 255]) array `(n, h, w, 3)` (or `1`, grayscale: a grayscale sprite), the
            evaluation-sized images; they are normalised (`normalize`) before encoding.
        labels: int array `(n,)`.
        class_names: list of str or None, names indexed by label. Defaults to None (the label).
        batch_size: int, images per forward pass. Defaults to 256.
        thumbnail_size: int or None, sprite tile side; None keeps the image size. The sprite must stay
            within 8192 × 8192 pixels. Defaults to None.
    """

    tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"

    def __init__(
        self, log_dir, images, labels, class_names=None, batch_size=256, thumbnail_size=None
    ):
        super().__init__()
        images = np.asarray(images)
        labels = np.asarray(labels).reshape(-1)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                "`images` must be a batch of RGB images (n, h, w, 3) or grayscale images (n, h, w, 1). "
                f"Received: images.shape={images.shape}"
            )
        if len(images) != len(labels):
            raise ValueError(
                "`images` and `labels` must have the same length. "
                f"Received: len(images)={len(images)}, len(labels)={len(labels)}"
            )
        side = thumbnail_size or images.shape[1]
        if math.ceil(math.sqrt(len(images))) * side > 8192:
            raise ValueError(
                "The sprite would exceed TensorBoard's 8192 x 8192 limit: use fewer images or a smaller "
                f"`thumbnail_size`. Received: {len(images)} images, thumbnail_size={side}"
            )
        if class_names is not None and len(class_names) <= int(labels.max()):
            raise ValueError(
                f"`class_names` must name every label up to {int(labels.max())}. "
                f"Received: {len(class_names)} class names"
            )
        self.log_dir = log_dir
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self.batch_size = batch_size
        self.thumbnail_size = thumbnail_size

    def _sprite(self):
        images = ops.cast(self.images, "float32")
        if self.thumbnail_size:
            images = ops.image.resize(images, (self.thumbnail_size, self.thumbnail_size))
        columns = math.ceil(math.sqrt(len(self.images)))
        # The projector expects a square sprite of `columns x columns` tiles, filled row by row; the
        # unused cells at the end stay black.
        images = ops.pad(images, [(0, columns * columns - len(self.images)), (0, 0), (0, 0), (0, 0)])
        sprite = tile_images(images, columns=columns)
        return np.clip(np.round(ops.convert_to_numpy(sprite)), 0, 255).astype("uint8")

    def write(self, encoder):
        """Embed the sample with `encoder` and write the projector files.

        Args:
            encoder: `keras.Model` mapping normalised images to `(batch, dim)`.

        Returns:
            float32 array `(n, dim)`, the features written.
        """
        import tensorflow as tf
        from tensorboard.plugins import projector

        os.makedirs(self.log_dir, exist_ok=True)
        features = embed(encoder, ops.convert_to_numpy(normalize(self.images)), self.batch_size)

        with open(os.path.join(self.log_dir, "metadata.tsv"), "w") as f:
            # With more than one column the projector expects a header row.
            f.write("label\tclass\n")
            for label in self.labels:
                name = self.class_names[label] if self.class_names is not None else str(label)
                f.write(f"{int(label)}\t{name}\n")

        sprite = self._sprite()
        tf.io.write_file(os.path.join(self.log_dir, "sprite.png"), tf.io.encode_png(sprite))

        checkpoint = tf.train.Checkpoint(embedding=tf.Variable(features, name="embedding"))
        checkpoint.save(os.path.join(self.log_dir, "embedding.ckpt"))

        config = projector.ProjectorConfig()
        # No `model_checkpoint_path`: TensorBoard then takes the newest checkpoint of this run's folder,
        # so the logs still work after the run directory is moved or copied.
        embedding = config.embeddings.add()
        embedding.tensor_name = self.tensor_name
        embedding.metadata_path = "metadata.tsv"
        embedding.sprite.image_path = "sprite.png"
        side = self.thumbnail_size or self.images.shape[1]
        embedding.sprite.single_image_dim.extend([side, side])
        projector.visualize_embeddings(self.log_dir, config)
        # TensorBoard lists as runs only the folders that hold an event file, and the projector looks for
        # its config in runs only: without this summary the PROJECTOR tab never appears.
        writer = tf.summary.create_file_writer(self.log_dir)
        with writer.as_default():
            tf.summary.text("embedding", f"{len(self.labels)} images, {features.shape[1]}-d features of "
                            "`model.encoder`: see the PROJECTOR tab", step=0)
        writer.close()
        return features

    def on_train_end(self, logs=None):
        encoder = getattr(self.model, "encoder", None)
        if encoder is None:
            raise ValueError(
                "`EmbeddingProjector` needs a model with an `encoder` attribute. "
                f"Received: model={type(self.model).__name__} without `encoder`"
            )
        self.write(encoder)


def make_callbacks(
    log_dir,
    knn_bank=None,
    knn_queries=None,
    knn_every_n_epochs=1,
    knn_k=200,
    knn_temperature=0.1,
    step_every_n=1,
    view_images=None,
    augment=None,
    projector_images=None,
    projector_labels=None,
    class_names=None,
    profile_batch=0,
    batch_size=256,
):
    """The usual monitoring set for a BYOL run, writing under `log_dir`.

    Layout: `log_dir/train` (Keras' epoch scalars, `epoch_loss`, ..., and the profile when requested),
    `log_dir/steps` (`StepScalars`), `log_dir/knn` (`KNNMonitor`), `log_dir/views` (`ViewGrid`),
    `log_dir/projector` (`EmbeddingProjector`). Each piece is optional except the first two.

    Args:
        log_dir: str.
        knn_bank: labelled bank for `KNNMonitor`, or None to skip it. Defaults to None.
        knn_queries: labelled queries for `KNNMonitor`. Defaults to None.
        knn_every_n_epochs: int. Defaults to 1.
        knn_k: int. Defaults to 200.
        knn_temperature: float. Defaults to 0.1.
        step_every_n: int, `StepScalars` frequency. Defaults to 1.
        view_images: images for `ViewGrid`, or None to skip it. Defaults to None.
        augment: the two-view augmentation, needed with `view_images`. Defaults to None.
        projector_images: images for `EmbeddingProjector`, or None to skip it. Defaults to None.
        projector_labels: labels for `EmbeddingProjector`. Defaults to None.
        class_names: list of str or None. Defaults to None.
        profile_batch: int or `(start, stop)`, passed to Keras' `TensorBoard`; 0 disables profiling.
            Defaults to 0.
        batch_size: int, forward-pass batch of the kNN monitor and projector. Defaults to 256.

    Returns:
        List of callbacks.
    """
    if (knn_bank is None) != (knn_queries is None):
        raise ValueError(
            "`knn_bank` and `knn_queries` must be given together. "
            f"Received: knn_bank={'set' if knn_bank is not None else None}, "
            f"knn_queries={'set' if knn_queries is not None else None}"
        )
    if view_images is not None and augment is None:
        raise ValueError("`augment` is required with `view_images`. Received: augment=None")
    log_dir = os.fspath(log_dir)
    callbacks = [
        # update_freq="epoch": the per-step scalars come from StepScalars, at the global step.
        keras.callbacks.TensorBoard(log_dir, update_freq="epoch", profile_batch=profile_batch),
        StepScalars(os.path.join(log_dir, "steps"), every_n_steps=step_every_n),
    ]
    if knn_bank is not None:
        # Placed after TensorBoard and given its own writer, so its values (and the value before
        # training) are written once, under `knn/knn_top1`.
        callbacks.append(
            KNNMonitor(
                knn_bank,
                knn_queries,
                every_n_epochs=knn_every_n_epochs,
                k=knn_k,
                temperature=knn_temperature,
                log_dir=os.path.join(log_dir, "knn"),
                batch_size=batch_size,
            )
        )
    if view_images is not None:
        callbacks.append(ViewGrid(os.path.join(log_dir, "views"), view_images, augment))
    if projector_images is not None:
        callbacks.append(
            EmbeddingProjector(
                os.path.join(log_dir, "projector"),
                projector_images,
                projector_labels,
                class_names=class_names,
                batch_size=batch_size,
            )
        )
    return callbacks
