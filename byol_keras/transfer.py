"""Supervised classifiers on a representation: the linear probe, the paper's linear evaluation, fine-tuning.

- `linear_probe`: a linear classifier trained on precomputed, frozen features (`byol_keras.embedding.embed`).
- `classifier_on_encoder` + `train_classifier` + `evaluate_classifier`: an encoder with a linear head,
  trained with SGD (Nesterov momentum 0.9, cosine decay) and measured top-1 / top-5.
- `transfer`: the paper's two transfer protocols in one routine, the linear evaluation (frozen encoder,
  augmented images) and semi-supervised fine-tuning (trainable encoder), which differ only in `freeze`;
  `byol_keras/cli/linear_eval.py` and `cli/finetune.py` are thin wrappers around it.

Labelled sets enter as `(images, labels)` NumPy arrays or `tf.data` datasets of `(image, label)`; the
input pipeline is `byol_keras.eval_data.classification_dataset`.
"""

import keras
import numpy as np

from byol_keras.eval_data import classification_dataset
from byol_keras.validation import check_positive_float, check_positive_int


def _top_k_metrics(num_classes):
    # With fewer than 5 classes "top-5" is trivially 1; it is still reported, as min(5, classes).
    return [
        keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
    ]


def _sgd(learning_rate, steps, momentum, nesterov, weight_decay):
    # Cosine decay to 0 over the whole run; `steps=None` (unknown length) keeps the rate constant.
    schedule = (
        keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
        if steps
        else learning_rate
    )
    return keras.optimizers.SGD(
        learning_rate=schedule,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay or None,
    )


def linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    num_classes,
    epochs=100,
    batch_size=256,
    learning_rate=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=0.0,
    standardize=True,
    verbose=0,
):
    """Train a linear classifier on frozen, precomputed features; report test top-1 and top-5.

    SGD with Nesterov momentum 0.9, no weight decay and a cosine-decayed learning rate, as in the paper's
    linear protocol ("SGD with Nesterov momentum ... no weight decay"), minus the image augmentation that
    precomputed features cannot have (use `train_classifier` for that).

    Example:

    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]] * 8)
    >>> y = np.array([0, 1] * 8)
    >>> linear_probe(x, y, x, y, num_classes=2, epochs=20, batch_size=4)["top1"]
    1.0

    Args:
        train_features: float array `(n_train, dim)`.
        train_labels: int array `(n_train,)`.
        test_features: float array `(n_test, dim)`.
        test_labels: int array `(n_test,)`.
        num_classes: int.
        epochs: int. Defaults to 100.
        batch_size: int. Defaults to 256.
        learning_rate: float, peak learning rate. Defaults to 0.1.
        momentum: float. Defaults to 0.9.
        nesterov: bool. Defaults to True.
        weight_decay: float. Defaults to 0.0 (the paper's value).
        standardize: bool. If True, features are shifted and scaled by the training mean and std per
            dimension. A linear layer can absorb any per-dimension affine map, so the classifier family is
            unchanged; only SGD's conditioning improves (pooled ReLU features have arbitrary scales).
            Defaults to True.
        verbose: int, Keras `fit` verbosity. Defaults to 0.

    Returns:
        Dict `{"top1": float, "top5": float}` on the test features.
    """
    check_positive_int("num_classes", num_classes)
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    check_positive_float("learning_rate", learning_rate)
    train_features = np.asarray(train_features, dtype="float32")
    test_features = np.asarray(test_features, dtype="float32")
    train_labels = np.asarray(train_labels).astype("int64").reshape(-1)
    test_labels = np.asarray(test_labels).astype("int64").reshape(-1)
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError(
            "`train_features` and `test_features` must be 2D (n, dim). Received: "
            f"train_features.shape={train_features.shape}, test_features.shape={test_features.shape}"
        )
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise ValueError(
            "Features and labels must have the same length. Received: "
            f"{len(train_features)} train features, {len(train_labels)} train labels, "
            f"{len(test_features)} test features, {len(test_labels)} test labels"
        )
    if standardize:
        mean = train_features.mean(axis=0)
        std = train_features.std(axis=0) + 1e-6
        train_features = (train_features - mean) / std
        test_features = (test_features - mean) / std
    classifier = keras.Sequential(
        [keras.Input((train_features.shape[1],)), keras.layers.Dense(num_classes)],
        name="linear_probe",
    )
    steps = epochs * int(np.ceil(len(train_features) / batch_size))
    classifier.compile(
        optimizer=_sgd(learning_rate, steps, momentum, nesterov, weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=_top_k_metrics(num_classes),
    )
    classifier.fit(
        train_features, train_labels, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose
    )
    results = classifier.evaluate(
        test_features, test_labels, batch_size=batch_size, verbose=0, return_dict=True
    )
    return {"top1": float(results["top1"]), "top5": float(results["top5"])}


def input_channels(encoder):
    """The channels of the images `encoder` takes: its recorded input's last axis, else 3 (RGB).

    A run's encoder of grayscale images takes 1; a subclassed encoder records no input and is taken as RGB.

    Args:
        encoder: `keras.Model`.

    Returns:
        int.
    """
    try:
        return int(encoder.inputs[0].shape[-1] or 3)
    except (AttributeError, IndexError, TypeError, ValueError):
        return 3


def classifier_on_encoder(encoder, num_classes, freeze, image_size=None, name=None):
    """An encoder followed by one `Dense(num_classes)` layer producing logits.

    With `freeze=True` (the linear protocol) the encoder is set non-trainable and called with
    `training=False`, so its BatchNorm layers use their moving statistics ("frozen encoder with BN in
    inference mode"). With `freeze=False` (fine-tuning) it trains, BatchNorm included.

    Args:
        encoder: `keras.Model` mapping images `(batch, h, w, channels)` to pooled features `(batch, dim)`; the
            classifier takes the encoder's channels (`input_channels`: 3, or 1 for grayscale).
        num_classes: int.
        freeze: bool.
        image_size: int or None, side of the input images; None leaves height and width unknown.
            Defaults to None.
        name: str or None, model name. Defaults to "linear_classifier" / "finetune_classifier".

    Returns:
        `keras.Model` from images to logits `(batch, num_classes)`.
    """
    check_positive_int("num_classes", num_classes)
    if freeze:
        # `trainable = False` also puts Keras BatchNormalization in inference mode; `training=False`
        # below makes that explicit and independent of the flag.
        encoder.trainable = False
    inputs = keras.Input((image_size, image_size, input_channels(encoder)))
    features = encoder(inputs, training=False) if freeze else encoder(inputs)
    logits = keras.layers.Dense(num_classes, name="classifier")(features)
    if name is None:
        name = "linear_classifier" if freeze else "finetune_classifier"
    return keras.Model(inputs, logits, name=name)


def train_classifier(
    model,
    train_dataset,
    epochs,
    learning_rate,
    momentum=0.9,
    nesterov=True,
    weight_decay=0.0,
    steps_per_epoch=None,
    validation_dataset=None,
    callbacks=None,
    verbose=1,
):
    """Train `model` with softmax cross-entropy and SGD (Nesterov momentum 0.9 by default).

    The learning rate decays with a cosine to 0 over `epochs` when the number of steps is known (from
    `steps_per_epoch` or the dataset's cardinality), otherwise it stays constant.

    Args:
        model: `keras.Model` from images to logits.
        train_dataset: batched `tf.data.Dataset` of `(images, labels)`.
        epochs: int.
        learning_rate: float, peak learning rate.
        momentum: float. Defaults to 0.9.
        nesterov: bool. Defaults to True.
        weight_decay: float. Defaults to 0.0 (the paper's linear protocol has none).
        steps_per_epoch: int or None; required with a repeating dataset. Defaults to None.
        validation_dataset: batched dataset or None. Defaults to None.
        callbacks: list of Keras callbacks or None. Defaults to None.
        verbose: int, Keras `fit` verbosity (1 = progress bar). Defaults to 1.

    Returns:
        The Keras `History`.
    """
    check_positive_int("epochs", epochs)
    check_positive_float("learning_rate", learning_rate)
    if steps_per_epoch is None:
        cardinality = int(train_dataset.cardinality())
        steps = epochs * cardinality if cardinality > 0 else None
    else:
        check_positive_int("steps_per_epoch", steps_per_epoch)
        steps = epochs * steps_per_epoch
    num_classes = int(model.output.shape[-1])
    model.compile(
        optimizer=_sgd(learning_rate, steps, momentum, nesterov, weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=_top_k_metrics(num_classes),
    )
    return model.fit(
        train_dataset,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_dataset,
        callbacks=callbacks,
        verbose=verbose,
        # The dataset shuffles itself; Keras 3.15 warns about its default `shuffle=True` otherwise.
        shuffle=False,
    )


def evaluate_classifier(model, test_dataset, verbose=0):
    """Top-1 and top-5 accuracy of a classifier (built by `classifier_on_encoder`) on a dataset.

    Args:
        model: `keras.Model` from images to logits.
        test_dataset: batched, finite `tf.data.Dataset` of `(images, labels)`.
        verbose: int. Defaults to 0.

    Returns:
        Dict `{"top1": float, "top5": float}`.
    """
    top1, top5 = _top_k_metrics(int(model.output.shape[-1]))
    cardinality = int(test_dataset.cardinality())
    progbar = keras.utils.Progbar(cardinality if cardinality >= 0 else None) if verbose else None
    for step, (images, labels) in enumerate(test_dataset):
        # `predict_on_batch` runs one compiled inference function (training=False) for every batch.
        logits = model.predict_on_batch(images)
        top1.update_state(labels, logits)
        top5.update_state(labels, logits)
        if progbar is not None:
            progbar.update(step + 1)
    return {"top1": float(top1.result()), "top5": float(top5.result())}


def transfer(
    encoder,
    train_data,
    test_data,
    num_classes,
    image_size,
    freeze,
    epochs,
    batch_size=256,
    learning_rate=0.1,
    weight_decay=0.0,
    crop_fraction=None,
    seed=0,
    verbose=1,
):
    """Train a linear classifier on `encoder`'s features and measure it on `test_data`: the paper's two
    transfer protocols, which differ only in `freeze`.

    The linear protocol (`freeze=True`) trains the linear layer alone on the frozen encoder, BatchNorm in
    inference mode; fine-tuning (`freeze=False`) trains the encoder with it, BatchNorm included, in place.
    Both: SGD with Nesterov momentum 0.9 and a cosine decay to 0 (`train_classifier`), a random resized crop
    and a flip for training images (`classification_dataset`), the centre crop for test images.

    Args:
        encoder: `keras.Model` from ImageNet-normalised images to pooled features `(batch, dim)`.
        train_data: `(images, labels)` arrays in [0, 255] or an unbatched dataset of `(image, label)`.
        test_data: same forms as `train_data`.
        num_classes: int.
        image_size: int, side of the encoder's input images.
        freeze: bool, True for the linear protocol, False for fine-tuning.
        epochs: int.
        batch_size: int. Defaults to 256.
        learning_rate: float, peak SGD learning rate. Defaults to 0.1.
        weight_decay: float. Defaults to 0.0 (the paper's linear protocol has none).
        crop_fraction: float or None, the test centre-crop fraction; a run's is its config's
            "crop_fraction". Defaults to None: `preprocessing.default_crop_fraction(image_size)`.
        seed: int, the training shuffle and crops. Defaults to 0.
        verbose: int, 1 shows progress bars. Defaults to 1.

    Returns:
        Dict `{"top1": float, "top5": float}` on the test set.
    """
    train = classification_dataset(train_data, image_size, batch_size, training=True, seed=seed)
    test = classification_dataset(test_data, image_size, batch_size, training=False, crop_fraction=crop_fraction)
    model = classifier_on_encoder(encoder, num_classes, freeze=freeze, image_size=image_size)
    train_classifier(
        model,
        train,
        epochs=epochs,
        learning_rate=learning_rate,
        momentum=0.9,
        nesterov=True,
        weight_decay=weight_decay,
        verbose=verbose,
    )
    return evaluate_classifier(model, test, verbose=verbose)
