"""BYOL as a `keras.Model`: online and target networks, the symmetric loss, and the target EMA."""

import copy
import json

import keras
import tensorflow as tf
from keras import ops

from byol_keras.encoders import feature_shape
from byol_keras.heads import mlp_head
from byol_keras.losses import byol_loss, l2_normalize
from byol_keras.onednn import tell_if_off
from byol_keras.schedules import target_tau
from byol_keras.validation import check_int, check_number, check_positive_int

# A saved BYOL refers to these modules' Keras objects (LARS, WarmupCosine, the views' layers): wherever BYOL is
# imported from, they are registered too, so that `keras.saving.load_model` rebuilds a whole run.
from byol_keras import optimizers as _optimizers  # noqa: F401, E402
from byol_keras import views as _view_layers  # noqa: F401, E402


def _clone_structure(layer):
    """A new layer with the same configuration (and fresh variables) as `layer`."""
    try:
        return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    except Exception as error:  # Any failure here means the encoder cannot be rebuilt from its config.
        raise ValueError(
            "The target network is built from the encoder's configuration, so `encoder` must support "
            "`get_config()` / `from_config()` (and be registered with "
            "`keras.saving.register_keras_serializable` if it is a custom class). "
            f"Received: encoder={layer.name!r} of type {type(layer).__name__}, which failed with: {error}"
        ) from error


def _unpack_views(data):
    """`(view1, view2)` or `(view1, view2, labels)` → `(view1, view2, labels or None)`."""
    if isinstance(data, (list, tuple)) and len(data) in (2, 3):
        view1, view2 = data[0], data[1]
        labels = data[2] if len(data) == 3 else None
        return view1, view2, labels
    raise ValueError(
        "BYOL expects each batch to be `(view1, view2)` or `(view1, view2, labels)`, e.g. from "
        "`byol_keras.data.pretrain_dataset`. "
        f"Received: a batch of type {type(data).__name__}"
        + (f" with {len(data)} elements" if isinstance(data, (list, tuple)) else "")
    )


def _input_image_shape(encoder):
    """`(height, width, channels)` of a Functional or Sequential encoder's single input, else None."""
    try:
        inputs = encoder.inputs
    except AttributeError:  # Subclassed models have no symbolic inputs.
        return None
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1 and len(inputs[0].shape) == 4:
        return tuple(inputs[0].shape[1:])
    return None


def _reducible_logs(logs):
    """Scalar logs, or length-1 logs where Keras' multi-worker reduction cannot take scalars.

    Keras 3.15 reduces the logs of a step under a multi-worker `MultiWorkerMirroredStrategy` with
    `strategy.reduce("MEAN", value, axis=0)`, which rejects scalars ("Invalid reduction dimension 0 for
    input with 0 dimensions", tensorflow/tensorflow#72388). There each log gets a length-1 axis; the
    reduction averages it over the workers and returns a scalar again. Everywhere else logs stay scalars.
    """
    strategy = tf.distribute.get_strategy()
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.extended._in_multi_worker_mode()  # The test Keras itself uses to take that path.
    )
    if not multi_worker:
        return logs
    return {name: ops.reshape(value, (1,)) for name, value in logs.items()}


class _TotalSteps(keras.callbacks.Callback):
    """Sets τ's horizon when `fit` starts: the model's `total_steps`, else epochs × steps per epoch."""

    def on_train_begin(self, logs=None):
        total = self.model.total_steps
        if total is None:
            epochs, steps = self.params.get("epochs"), self.params.get("steps")
            if not steps or not epochs:
                raise ValueError(
                    "BYOL needs the total number of training steps for its τ schedule, and `fit` cannot "
                    "tell it: the dataset's length is unknown. Pass `steps_per_epoch=` to `fit`, or "
                    f"`total_steps=` to `BYOL(...)`. Received: epochs={epochs}, steps per epoch={steps}"
                )
            total = int(epochs) * int(steps)
        if int(keras.ops.convert_to_numpy(self.model._total_steps)) != total:
            self.model._total_steps.assign(total)


@keras.saving.register_keras_serializable(package="byol_keras")
class BYOL(keras.Model):
    """Bootstrap Your Own Latent (Grill et al., 2020) as a `keras.Model`.

    "BYOL's goal is to learn a representation y_θ which can then be used for downstream tasks. ...
    BYOL uses two neural networks to learn: the online and target networks. ... we use an exponential
    moving average of the online parameters θ as the target parameters ξ" (section 3.1).

    The online network is `encoder` → `projector` → `predictor`; the target network is
    `target_encoder` → `target_projector`, built with the same structure and starting from a copy of
    the online weights. `model(images)` returns the online encoder's features, so a trained model is
    directly an embedder. Pretraining is `compile(optimizer=...)` + `fit(dataset)` where the dataset
    yields `(view1, view2)` or `(view1, view2, labels)` batches of normalised images.

    Args:
        encoder: a `keras.Model` or layer mapping images `(batch, h, w, c)` to features `(batch, dim)`.
        projection_dim: int, output size of projector and predictor. Defaults to 256.
        projection_hidden_dim: int, hidden width of the projector. Defaults to 4096.
        prediction_hidden_dim: int, hidden width of the predictor. Defaults to 4096.
        base_tau: float in [0, 1], τ_base of the target EMA's cosine schedule. Defaults to 0.996.
        total_steps: int or None, the K of the τ schedule. When None, every `fit` sets it to
            epochs × steps per epoch. Defaults to None.
        num_classes: int or None. When set, an online linear probe on the stop-gradient encoder
            output is trained alongside from batches that carry labels (label -1 means unlabelled),
            as the paper's monitor; logs `probe_loss` and `probe_accuracy`. Its input is the
            features standardised per dimension and scaled by 1/√dim, so that it trains stably at
            BYOL's learning rate whatever the scale of the features. Defaults to None.
        image_shape: tuple `(height, width, channels)` or None. When None it is read from the
            encoder's input if the encoder has one, otherwise the model is built at its first call.
            Defaults to None.
        synchronized_bn: bool or None, cross-replica BatchNorm in the heads. None means "when the
            current `tf.distribute` strategy has more than one replica". Defaults to None.
        augment: a layer mapping a batch of uint8 (or [0, 255] float) images to the two views
            `(view1, view2)`, e.g. `byol_keras.views.BYOLAugment`; only with
            `augment_on="device"`. Defaults to None.
        augment_on: `"data"` or `"device"`. `"data"`: batches arrive as views made in `tf.data`,
            `(view1, view2)` or `(view1, view2, labels)`. `"device"`: batches arrive from
            `pretrain_dataset(..., views=augment, views_on="device")`, which decodes and cuts each view's
            window on the CPU, as `(crops1, crops2, labels)` (then `augment.augment_crops` makes the rest
            of the views), or as whole images `images` / `(images, labels)` (then `augment` makes the whole
            views), inside the compiled `train_step` (and `test_step`), for accelerator hosts with few CPU
            cores. The views have the same distribution either way (under XLA TensorFlow's
            stateless RNG uses another algorithm, so a seed gives other, equally distributed, draws). With a
            seeded `BYOLAugment` the draws made here are keyed by the seed, the global step and the replica
            (`augment_images`, `augment_crops(..., key=)`), so a run resumed from a backup makes the views an
            uninterrupted run makes. Defaults to `"data"`.
        head_initializer: the projector's and predictor's Dense kernel initializer, any
            `keras.initializers.get` identifier. Defaults to "glorot_uniform". The official code
            (Haiku) draws them with std 1/√fan_in, PyTorch (lightly, solo-learn) uniformly within
            ±1/√fan_in; each Dense feeds a BatchNorm or the normalised loss, so this scale sets the
            effective learning rate, not the function.

    Example:

    >>> from byol_keras.encoders import resnet18
    >>> model = BYOL(resnet18(width=4, input_shape=(32, 32, 3)), projection_dim=16,
    ...              projection_hidden_dim=32, prediction_hidden_dim=32, total_steps=100)
    >>> model.compile(optimizer="sgd")
    >>> tuple(model(np.zeros((2, 32, 32, 3), "float32")).shape)
    (2, 32)
    """

    def __init__(
        self,
        encoder,
        projection_dim=256,
        projection_hidden_dim=4096,
        prediction_hidden_dim=4096,
        base_tau=0.996,
        total_steps=None,
        num_classes=None,
        image_shape=None,
        synchronized_bn=None,
        augment=None,
        augment_on="data",
        head_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(encoder, keras.layers.Layer):
            raise ValueError(
                "`encoder` must be a keras.Model or keras.layers.Layer mapping images to feature "
                f"vectors (batch, dim). Received: encoder={encoder!r} of type {type(encoder).__name__}"
            )
        projection_dim = check_positive_int("projection_dim", projection_dim)
        projection_hidden_dim = check_positive_int("projection_hidden_dim", projection_hidden_dim)
        prediction_hidden_dim = check_positive_int("prediction_hidden_dim", prediction_hidden_dim)
        base_tau = check_number("base_tau", base_tau, 0, 1)
        total_steps = check_int("total_steps", total_steps, minimum=1, allow_none=True)
        num_classes = check_int("num_classes", num_classes, minimum=2, allow_none=True)
        if augment_on not in ("data", "device"):
            raise ValueError(
                f"`augment_on` must be 'data' or 'device'. Received: augment_on={augment_on!r}"
            )
        if augment is not None and not isinstance(augment, keras.layers.Layer):
            raise TypeError(
                "`augment` must be a keras layer returning (view1, view2), e.g. BYOLAugment. "
                f"Received: augment={augment!r} of type {type(augment).__name__}"
            )
        if (augment_on == "device") != (augment is not None):
            raise ValueError(
                "`augment` is needed with augment_on='device' and only used there (with 'data' the "
                "dataset makes the views). "
                f"Received: augment_on={augment_on!r}, augment={augment!r}"
            )
        try:
            head_initializer = keras.initializers.serialize(keras.initializers.get(head_initializer))
        except (ValueError, TypeError) as error:
            raise ValueError(
                "`head_initializer` must be a Keras initializer or its name/config. "
                f"Received: head_initializer={head_initializer!r}"
            ) from error
        if image_shape is None:
            image_shape = _input_image_shape(encoder)
        if image_shape is not None:
            image_shape = tuple(image_shape)
            if len(image_shape) != 3:
                raise ValueError(
                    "`image_shape` must be (height, width, channels). "
                    f"Received: image_shape={image_shape!r}"
                )

        self.encoder = encoder
        self.projection_dim = projection_dim
        self.projection_hidden_dim = projection_hidden_dim
        self.prediction_hidden_dim = prediction_hidden_dim
        self.base_tau = float(base_tau)
        self.total_steps = total_steps
        self.num_classes = num_classes
        self.image_shape = image_shape
        self.synchronized_bn = synchronized_bn
        self.augment = augment
        self.augment_on = augment_on
        # As JSON text: a dict attribute would be tracked by Keras as layer state.
        self._head_initializer_json = json.dumps(head_initializer)

        # τ's horizon K lives in a variable so that `fit` can set it without retracing and a saved
        # model carries it.
        self._total_steps = self.add_weight(
            shape=(), dtype="int64", initializer=keras.initializers.Constant(total_steps or 0),
            trainable=False, name="total_steps",
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.std_tracker = keras.metrics.Mean(name="representation_std")
        if num_classes is not None:
            self.probe_loss_tracker = keras.metrics.Mean(name="probe_loss")
            self.probe_accuracy = keras.metrics.SparseCategoricalAccuracy(name="probe_accuracy")
        if image_shape is not None:
            self.build((None,) + image_shape)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        dim = feature_shape(self.encoder, input_shape)[-1]
        synchronized = self.synchronized_bn
        if synchronized is None:
            synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
        self.projector = mlp_head(
            dim, self.projection_hidden_dim, self.projection_dim, synchronized, name="projector",
            kernel_initializer=self.head_initializer,
        )
        self.predictor = mlp_head(
            self.projection_dim, self.prediction_hidden_dim, self.projection_dim, synchronized,
            name="predictor", kernel_initializer=self.head_initializer,
        )
        # The target has the online encoder's and projector's structure (no predictor) and starts
        # as a copy of their weights, never an independent random initialisation.
        self.target_encoder = _clone_structure(self.encoder)
        # Tracing it symbolically builds any encoder, also a subclassed one without `build()`.
        feature_shape(self.target_encoder, input_shape)
        self.target_projector = _clone_structure(self.projector)
        self._ema_pairs = []
        for online, target in ((self.encoder, self.target_encoder), (self.projector, self.target_projector)):
            if len(online.weights) != len(target.weights):
                raise ValueError(
                    f"The target copy of {online.name!r} has {len(target.weights)} weights but the "
                    f"online network has {len(online.weights)}; the encoder's get_config() does not "
                    "describe its full structure."
                )
            for o, t in zip(online.weights, target.weights):
                if tuple(o.shape) != tuple(t.shape):
                    raise ValueError(
                        f"Target weight {t.path} has shape {tuple(t.shape)}, online {o.path} has "
                        f"{tuple(o.shape)}; the encoder's get_config() does not rebuild it faithfully."
                    )
                t.assign(o)
                # The target gets no gradient: its variables are marked non-trainable so that
                # `model.trainable_variables` (and the optimizer's slots) cover the online network
                # only. Its *layers* stay trainable, because `trainable = False` on a Keras
                # BatchNormalization switches it to inference mode, and the paper's target runs
                # in training mode (batch statistics, its own moving statistics).
                if o.trainable:
                    # EMA over the parameters only; BN moving statistics are not averaged.
                    self._ema_pairs.append((t, o))
                t.trainable = False
        if self.num_classes is not None:
            # Standardised input (BatchNorm without γ/β) scaled by 1/√dim; see `_probe_loss`.
            self.probe_norm = keras.layers.BatchNormalization(
                center=False, scale=False, momentum=0.9, epsilon=1e-5, dtype="float32", name="probe_norm"
            )
            self.probe_norm.build((None, dim))
            self.probe = keras.layers.Dense(self.num_classes, dtype="float32", name="probe")
            self.probe.build((None, dim))

    def call(self, images, training=False):
        return self.encoder(images, training=training)

    @property
    def metrics(self):
        metrics = [self.loss_tracker, self.std_tracker]
        if self.num_classes is not None:
            metrics += [self.probe_loss_tracker, self.probe_accuracy]
        return metrics

    def fit(self, *args, callbacks=None, **kwargs):
        # First, so that the other callbacks (and the first step) see the horizon; and last again, because a
        # callback that restores the weights (`StepBackup`) restores the horizon saved with them: a resumed run
        # whose length changed (`byol-pretrain --epochs`) follows its own, like its learning rate.
        callbacks = [_TotalSteps(), *(callbacks or []), _TotalSteps()]
        try:
            return super().fit(*args, callbacks=callbacks, **kwargs)
        finally:
            # Keras calls no callback when `fit` ends by an exception: a callback that holds process state during
            # `fit` (`StepBackup`'s signal handlers) releases it here, however `fit` ends.
            for callback in callbacks:
                if callable(getattr(callback, "release", None)):
                    callback.release()

    def compile(self, optimizer="rmsprop", jit_compile="auto", **kwargs):
        """`keras.Model.compile`, with `jit_compile="auto"` deciding XLA by measurement.

        Here `"auto"` asks `distribute.resolve_jit_compile`: XLA on a GPU; on a CPU-only host off while
        TensorFlow's oneDNN kernels are on (they measured faster, with AVX-512 and with AVX2) and on while
        they are off (XLA beat the Eigen kernels), on whenever the views are made on the device; and off
        where it fails (several replicas, TPUStrategy, op determinism). On an x86 CPU where oneDNN is off
        by TensorFlow's default (TensorFlow imported before byol_keras), one line says so, once, with the
        fix (`byol_keras.onednn.tell_if_off`).
        """
        tell_if_off()
        if jit_compile == "auto":
            if kwargs.get("run_eagerly"):
                jit_compile = False
            else:
                from byol_keras.distribute import resolve_jit_compile

                jit_compile, _ = resolve_jit_compile(
                    self.distribute_strategy, augment_on_device=self.augment_on == "device"
                )
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config):
        # Keras skips re-compiling a loaded model whose class overrides `compile` (it only warns), which
        # would load a BYOL without its optimizer, global step and so τ. Ours keeps Keras' signature.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _views(self, data):
        """The `(view1, view2, labels or None)` of a batch: as given, or made here (augment_on="device")."""
        if self.augment_on == "data":
            return _unpack_views(data)
        if isinstance(data, (list, tuple)):
            # `train_on_batch(images)` hands over `(images, None, None)`.
            data = tuple(data)
            while len(data) > 1 and data[-1] is None:
                data = data[:-1]
            if len(data) == 3:
                # `pretrain_dataset(..., views_on="device")` on its per-image path: each view's crops are
                # already cut from the whole image on the CPU; the rest of the views is made here.
                crops1, crops2, labels = data
                if not hasattr(self.augment, "augment_crops"):
                    raise ValueError(
                        "Batches of `(crops1, crops2, labels)` need `augment` to be a BYOLAugment (its "
                        f"`augment_crops` finishes the views). Received: augment={self.augment!r}"
                    )
                view1, view2 = self.augment.augment_crops(crops1, crops2, key=self._views_key())
                return view1, view2, labels
            if len(data) not in (1, 2):
                raise ValueError(
                    "With augment_on='device' BYOL expects each batch to be `images`, `(images, labels)` "
                    f"or `(crops1, crops2, labels)`. Received: a batch with {len(data)} elements"
                )
            images, labels = data[0], (data[1] if len(data) == 2 else None)
        else:
            images, labels = data, None
        key = self._views_key()
        if key is not None:
            view1, view2 = self.augment.augment_images(images, key)
        else:
            view1, view2 = self.augment(images, training=True)
        return view1, view2, labels

    def _views_key(self):
        """The stateless key of this step's views on the device, or None (draw from the augment's generators).

        A seeded `BYOLAugment` draws from `(seed, global step, replica)`: the step counter is saved with the
        weights and the augment's seed generators are not, so this is what makes a resumed run's views the
        uninterrupted run's. Each replica folds in its own index, so replicas do not repeat each other's draws.
        """
        seed = getattr(self.augment, "seed", None)
        if seed is None or not hasattr(self.augment, "augment_images") or self.optimizer is None:
            return None
        key = tf.constant([int(seed), 1], tf.int64)
        key = tf.random.experimental.stateless_fold_in(key, ops.cast(self.optimizer.iterations, "int64"))
        replica = tf.distribute.get_replica_context()
        if replica is not None:
            key = tf.random.experimental.stateless_fold_in(key, ops.cast(replica.replica_id_in_sync_group, "int64"))
        return key

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 (TF trainer) first pulls a batch and reduces it across replicas with
        # `strategy.reduce("MEAN", batch)`, which fails under MultiWorkerMirroredStrategy for a
        # `(view1, view2)` tuple ("Attempt to convert a value (PerReplica ...) to a Tensor"). A built
        # BYOL has no compiled loss or metrics to build from a sample batch: only the optimizer's
        # variables are missing, and `_symbolic_build` creates them without data. (An unbuilt BYOL, e.g. a
        # subclassed encoder without `image_shape`, still takes Keras' path.) Also without a strategy, where Keras
        # leaves them to the first step: a `tf.function` that creates variables is traced twice, which doubled
        # the time to the first step (MobileNetV3Small, the README's example: 18 s to trace, 9 once built here).
        if all(layer.built for layer in self._flatten_layers()):
            with self.distribute_strategy.scope():
                self._symbolic_build(data_batch=None)
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_on_batch(self, *args, **kwargs):
        if int(keras.ops.convert_to_numpy(self._total_steps)) <= 0:
            raise ValueError(
                "BYOL needs the total number of training steps for its τ schedule; `train_on_batch` "
                "cannot infer it. Pass `total_steps=` to `BYOL(...)`. Received: total_steps=None"
            )
        return super().train_on_batch(*args, **kwargs)

    def _targets(self, view1, view2, training):
        """Stop-gradient target projections of both views."""
        # Target: same mode as the online network (training mode = batch statistics and its own
        # moving-statistics update), and no gradient: ξ is only ever moved by the EMA.
        target1 = self.target_projector(self.target_encoder(view1, training=training), training=training)
        target2 = self.target_projector(self.target_encoder(view2, training=training), training=training)
        return ops.stop_gradient(target1), ops.stop_gradient(target2)

    def _forward(self, view1, view2, training, targets=None):
        """Online projections and predictions of both views, and the loss against the target projections.

        `targets`: the pair from `_targets`, or None to compute it here. `train_step` computes it before
        its `GradientTape`: the target's variables are tf.Variables created trainable (Keras' later
        `trainable = False` does not reach the tape), so a tape around the target's forward pass would
        record it; run eagerly, that keeps all its activations alive until the gradient, for nothing.
        """
        target1, target2 = self._targets(view1, view2, training) if targets is None else targets
        h1 = self.encoder(view1, training=training)
        h2 = self.encoder(view2, training=training)
        z1 = self.projector(h1, training=training)
        z2 = self.projector(h2, training=training)
        p1 = self.predictor(z1, training=training)
        p2 = self.predictor(z2, training=training)
        # Symmetrised loss: each view's prediction regresses the *other* view's target projection,
        # summed over the two directions and averaged over the batch (paper eq. 2 and L + L~).
        loss = ops.mean(byol_loss(p1, target2) + byol_loss(p2, target1))
        return h1, z1, z2, loss

    def _probe_loss(self, features, labels, training):
        """Masked cross-entropy of the linear probe on stop-gradient features (labels < 0 ignored)."""
        # Stop-gradient: the probe monitors the representation, it must not shape it. Its input is
        # standardised per dimension (batch statistics in training, moving ones in evaluation) and
        # scaled to unit mean squared norm: the probe shares BYOL's optimizer and learning rate
        # (0.5-5 with LARS, where the trust ratio, not the rate, sets the step), and the curvature
        # of cross-entropy in the weights is at most |x|²/2. On raw features (norm growing during
        # training) those rates diverge; on L2-normalised ones (post-ReLU features all point the
        # same way, the classes differ in small deviations) the probe barely moves.
        features = ops.cast(ops.stop_gradient(features), "float32")
        features = self.probe_norm(features, training=training) / ops.sqrt(float(features.shape[-1]))
        logits = ops.cast(self.probe(features, training=training), "float32")
        labels = ops.cast(labels, "int32")
        mask = ops.cast(labels >= 0, "float32")
        safe_labels = ops.maximum(labels, 0)
        per_example = keras.losses.sparse_categorical_crossentropy(safe_labels, logits, from_logits=True)
        loss = ops.sum(per_example * mask) / ops.maximum(ops.sum(mask), 1.0)
        self.probe_loss_tracker.update_state(loss, sample_weight=ops.sum(mask))
        self.probe_accuracy.update_state(safe_labels, logits, sample_weight=mask)
        return loss

    def _update_trackers(self, loss, z1, z2, batch_size):
        self.loss_tracker.update_state(loss, sample_weight=batch_size)
        self.std_tracker.update_state(representation_std(ops.concatenate([z1, z2], axis=0)))

    def train_step(self, data):
        view1, view2, labels = self._views(data)
        optimizer = self.optimizer
        # The global step before this update: τ_k and the learning rate of this step.
        # `tf.identity` takes a snapshot: `ops.convert_to_tensor` would hand back the variable itself,
        # and a later comparison would then read the already incremented counter.
        step = tf.identity(optimizer.iterations.value)
        tau = target_tau(step, self._total_steps, self.base_tau)
        learning_rate = ops.cast(optimizer.learning_rate, "float32")
        targets = self._targets(view1, view2, training=True)  # outside the tape: see `_forward`
        with tf.GradientTape() as tape:
            h1, z1, z2, loss = self._forward(view1, view2, training=True, targets=targets)
            total = loss
            if self.num_classes is not None and labels is not None:
                total = total + self._probe_loss(h1, labels, training=True)
            # Keras sums gradients over replicas: differentiate loss / replicas (the logged loss
            # stays unscaled), and let a loss-scale optimizer scale it for float16.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = optimizer.scale_loss(total / replicas)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        optimizer.apply(gradients, variables)
        # The EMA, after the optimizer step: ξ ← τ·ξ + (1 − τ)·θ. A step that a loss-scale optimizer
        # skipped (non-finite gradients) leaves its step counter unchanged; then τ_eff = 1 and the
        # target does not move either.
        stepped = ops.greater(tf.identity(optimizer.iterations.value), step)
        tau_eff = ops.where(stepped, tau, ops.ones_like(tau))
        for target, online in self._ema_pairs:
            rate = ops.cast(tau_eff, target.dtype)
            target.assign(rate * target + (1.0 - rate) * ops.cast(online, target.dtype))
        self._update_trackers(loss, z1, z2, ops.shape(view1)[0])
        logs = {m.name: m.result() for m in self.metrics}
        logs["tau"] = tau
        logs["learning_rate"] = learning_rate
        return _reducible_logs(logs)

    def test_step(self, data):
        view1, view2, labels = self._views(data)
        h1, z1, z2, loss = self._forward(view1, view2, training=False)
        if self.num_classes is not None and labels is not None:
            self._probe_loss(h1, labels, training=False)
        self._update_trackers(loss, z1, z2, ops.shape(view1)[0])
        return _reducible_logs({m.name: m.result() for m in self.metrics})

    @property
    def head_initializer(self):
        """A fresh instance of the heads' kernel initializer (from its saved configuration)."""
        return keras.initializers.deserialize(json.loads(self._head_initializer_json))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "projection_dim": self.projection_dim,
                "projection_hidden_dim": self.projection_hidden_dim,
                "prediction_hidden_dim": self.prediction_hidden_dim,
                "base_tau": self.base_tau,
                "total_steps": self.total_steps,
                "num_classes": self.num_classes,
                "image_shape": self.image_shape,
                "synchronized_bn": self.synchronized_bn,
                "augment": None if self.augment is None else keras.saving.serialize_keras_object(self.augment),
                "augment_on": self.augment_on,
                "head_initializer": json.loads(self._head_initializer_json),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Deep copy: Keras' deserialisation consumes parts of the nested dict it is given.
        config = copy.deepcopy(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        if config.get("augment") is not None:
            config["augment"] = keras.saving.deserialize_keras_object(config["augment"])
        return cls(**config)


def representation_std(z):
    """The collapse monitor: mean over dimensions of the batch std of L2-normalised vectors.

    About 1/√dim for well-spread representations, 0 when every example maps to the same direction.
    `train_step` passes both views' projections concatenated, one std over the `2 · batch` rows; solo-learn's
    `z_std` takes the std of each view's projections apart and averages the two, which differs when the
    views' means differ.

    Args:
        z: `(batch, dim)` projections.

    Returns:
        float32 scalar.
    """
    z = l2_normalize(ops.cast(z, "float32"))
    return ops.mean(ops.std(z, axis=0))
