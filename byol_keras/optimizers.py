"""LARS, the optimizer BYOL is trained with, as a Keras 3 optimizer.

LARS (You et al. 2017, "Large Batch Training of Convolutional Networks", arXiv 1708.03888) rescales each
variable's update by a per-layer trust ratio η·‖w‖/‖g‖. This module follows the BYOL official code
(deepmind-research `byol/utils/optimizers.py`), which chains three transformations per variable:

    g ← g + wd·w                                   (add_weight_decay; coupled, inside the gradient)
    g ← η·‖w‖/‖g‖ · g   if ‖w‖ > 0 and ‖g‖ > 0     (scale_by_lars; else the ratio is 1)
    v ← m·v + g;  w ← w − lr·v                     (momentum, then the learning rate)

and leaves biases and BatchNorm parameters out of the first two steps (they still get momentum).

The CIFAR recipes of solo-learn (`scripts/pretrain/cifar/byol.yaml`) use PyTorch Lightning Bolts' LARS
instead, which differs in two places, both available here: the trust ratio's denominator is
`‖g‖ + wd·‖w‖` (`trust_ratio="pytorch"`), and with `clip_lr=True` the local rate is clipped so that
`lr·local ≤ lr`: `local = min(ratio / lr, 1)` (`clip_lr`).
"""


import keras
from keras import ops

from byol_keras.schedules import WarmupCosine, scale_learning_rate
from byol_keras.validation import check_bool, is_number

# Parts of a variable's path that exclude it from weight decay and the trust ratio whatever its rank: a
# transformer's position embeddings and class (or register) tokens are learned inputs, not weights (ViT, DeiT
# and the MAE/DINO recipes exclude them); KerasHub's ViT names them so.
NOT_ADAPTED_PATH_PARTS = ("position_embedding", "pos_embed", "class_token", "cls_token", "register_token")


def excluded_by_default(variable):
    """Whether LARS' default rule keeps `variable` out of weight decay and the trust ratio.

    Paper, appendix C: "we exclude the biases and batch normalization parameters from both LARS adaptation and
    weight decay"; the official code matches the names `b` and `batchnorm`. Here: every variable of rank <= 1
    (biases, BatchNorm and LayerNorm γ/β), every variable named `bias` (of any rank: KerasHub's attention biases
    are `(heads, head_dim)`), and position embeddings and class tokens (`NOT_ADAPTED_PATH_PARTS`).

    Args:
        variable: a `keras.Variable` (or anything with `shape` and `path` or `name`).

    Returns:
        Python bool.
    """
    path = getattr(variable, "path", None) or variable.name
    if len(variable.shape) <= 1 or path.rsplit("/", 1)[-1] == "bias":
        return True
    return any(part in path for part in NOT_ADAPTED_PATH_PARTS)


def lars_trust_ratio(weight, update, trust_coefficient):
    """The LARS trust ratio `η·‖w‖/‖g‖`, or 1 when either norm is 0.

    You et al. 2017, eq. (6): "local LR λ^l = η × ‖w^l‖ / ‖∇L(w^l)‖"; the official BYOL code uses the
    gradient with weight decay already added as `g`, and a ratio of 1 for zero norms (a freshly zero
    initialised variable, or one that gets no gradient this step).

    Example:

    >>> round(float(lars_trust_ratio(ops.ones((4,)), 0.5 * ops.ones((4,)), 1e-3)), 6)
    0.002

    Args:
        weight: tensor of any shape, `w`.
        update: tensor of the same shape, `g`.
        trust_coefficient: float, η.

    Returns:
        Scalar tensor with the dtype of `weight`.
    """
    weight_norm = ops.sqrt(ops.sum(ops.square(weight)))
    update_norm = ops.sqrt(ops.sum(ops.square(update)))
    both_positive = ops.logical_and(weight_norm > 0, update_norm > 0)
    # Divide by a safe denominator instead of relying on `where` to drop an inf: the selected branch is
    # then finite in every case, and nothing downstream ever sees a NaN.
    safe_update_norm = ops.where(both_positive, update_norm, ops.ones_like(update_norm))
    ratio = ops.cast(trust_coefficient, weight_norm.dtype) * weight_norm / safe_update_norm
    return ops.where(both_positive, ratio, ops.ones_like(ratio))


def lars_local_rate(weight, gradient, trust_coefficient, weight_decay=0.0, learning_rate=None, style="official"):
    """The factor LARS multiplies the (weight-decayed) gradient by, in either convention.

    - `style="official"` (BYOL's official code): `η·‖w‖ / ‖g + wd·w‖`, 1 when either norm is 0
      (`lars_trust_ratio` of the decayed gradient).
    - `style="pytorch"` (PyTorch Lightning Bolts' and solo-learn's LARS): `η·‖w‖ / (‖g‖ + wd·‖w‖ + 1e-8)`,
      1 when either `‖w‖` or `‖g‖` is 0.

    With `learning_rate` given (solo-learn's `clip_lr=True`) the factor becomes `min(factor / lr, 1)`:
    the step `lr·factor` never exceeds the plain SGD step `lr`.

    Example (‖w‖ = 2, ‖g‖ = 1, η = 0.02, wd = 0, lr = 1.0 → 0.04; at lr 0.01 the clip gives 1):

    >>> w, g = ops.array([2.0, 0.0]), ops.array([0.0, 1.0])
    >>> round(float(lars_local_rate(w, g, 0.02, style="pytorch")), 6)
    0.04
    >>> round(float(lars_local_rate(w, g, 0.02, learning_rate=0.01, style="pytorch")), 6)
    1.0

    Args:
        weight: tensor `w`, any shape.
        gradient: tensor of the same shape, the gradient *without* weight decay.
        trust_coefficient: float, η.
        weight_decay: float >= 0, wd. Defaults to 0.
        learning_rate: `None`, or the current learning rate (scalar) to clip against. Defaults to `None`.
        style: `"official"` or `"pytorch"`. Defaults to `"official"`.

    Returns:
        Scalar tensor with the dtype of `weight`.
    """
    rate, _ = _local_rate_and_mask(weight, gradient, trust_coefficient, weight_decay, learning_rate, style)
    return rate


def _local_rate_and_mask(weight, gradient, trust_coefficient, weight_decay, learning_rate, style):
    """`lars_local_rate`, and whether both norms were positive (the only case where LARS adapts)."""
    if style not in TRUST_RATIO_STYLES:
        raise ValueError(f"`style` must be one of {TRUST_RATIO_STYLES}. Received: style={style!r}")
    weight_decay = ops.cast(weight_decay, weight.dtype)
    weight_norm = ops.sqrt(ops.sum(ops.square(weight)))
    if style == "official":
        update_norm = ops.sqrt(ops.sum(ops.square(gradient + weight_decay * weight)))
        denominator = update_norm
    else:
        update_norm = ops.sqrt(ops.sum(ops.square(gradient)))
        denominator = update_norm + weight_decay * weight_norm + ops.cast(PYTORCH_LARS_EPSILON, weight.dtype)
    both_positive = ops.logical_and(weight_norm > 0, update_norm > 0)
    # A safe denominator rather than `where` dropping an inf: every branch stays finite.
    denominator = ops.where(both_positive, denominator, ops.ones_like(denominator))
    rate = ops.cast(trust_coefficient, weight.dtype) * weight_norm / denominator
    if learning_rate is not None:
        rate = ops.minimum(rate / ops.cast(learning_rate, weight.dtype), ops.ones_like(rate))
    # Either norm 0: no adaptation (the clip included, as in solo-learn, where it sits inside that branch).
    return ops.where(both_positive, rate, ops.ones_like(rate)), both_positive


TRUST_RATIO_STYLES = ("official", "pytorch")
# The `eps` of PyTorch Lightning Bolts' LARS, which solo-learn copies.
PYTORCH_LARS_EPSILON = 1e-8



@keras.saving.register_keras_serializable(package="byol_keras")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling with momentum, as in BYOL's official code.

    For every variable `w` with gradient `g` (η = `trust_coefficient`, m = `momentum`, wd = `weight_decay`):

    ```python
    if adapted(w):                        # not a bias / BatchNorm parameter, see below
        g = g + wd * w                    # coupled weight decay, *before* the trust ratio
        g = trust * g                     # trust = η·‖w‖/‖g‖ if both norms > 0 else 1
    v = m * v + g                         # momentum on every variable
    w = w - lr * v                        # or w - lr * (m * v + g) with nesterov=True
    ```

    Which variables are adapted is decided once per variable when the optimizer is built, so the update
    has no data-dependent Python branch (it runs under `jit_compile=True` and `tf.distribute`):

    - By default (`exclude_from_adaptation=None`) every variable of rank ≤ 1 is excluded from both weight
      decay and the trust ratio: biases and BatchNorm γ/β are vectors, kernels have rank ≥ 2. This is
      BYOL's "biases and batch-norm parameters are excluded" (the official filter matches the names
      `b` and `batchnorm`). So are variables named `bias` of any rank, position embeddings and class
      tokens (a ViT's; `excluded_by_default`).
    - With `exclude_from_adaptation=[...]`, a list of substrings, the rank rule is *replaced*: a variable
      is excluded exactly when one of the substrings occurs in its path (`variable.path`, for example
      `"dense/bias"` or `"batch_normalization/gamma"`; plain substring match, not a regex). An empty list
      adapts every variable.
    - Keras' own `optimizer.exclude_from_weight_decay(var_list=..., var_names=...)` is honoured too, when
      called before the optimizer is built: it removes variables from weight decay only (they keep the
      trust ratio).

    Keras' base optimizer would apply `weight_decay` itself as *decoupled* decay (`w -= lr·wd·w`, outside
    the gradient). LARS needs the decay inside the gradient, before the trust ratio, so that base
    mechanism is switched off here: `weight_decay` is applied exactly once, in `update_step`.

    Gradients are all-reduced (summed over replicas) by Keras before `update_step` sees them, so under
    `tf.distribute` the norms are those of the global gradient. Under
    `keras.optimizers.LossScaleOptimizer` the gradients are unscaled before they get here.

    Example:

    ```python
    model.compile(optimizer=LARS(learning_rate=0.2, weight_decay=1.5e-6), loss="mse")
    ```

    Args:
        learning_rate: float, a `keras.optimizers.schedules.LearningRateSchedule` (for instance
            `byol_keras.schedules.WarmupCosine`), or a callable with no arguments. Defaults to `0.001`.
        momentum: float in [0, 1], m. Defaults to `0.9` (BYOL).
        trust_coefficient: float > 0, η, or `None` for no trust ratio: then this is SGD with momentum and
            *coupled* L2 weight decay, `torch.optim.SGD(momentum=m, weight_decay=wd)` exactly (with
            `exclude_from_adaptation=[]` every variable is decayed, as PyTorch does). Keras' own
            `keras.optimizers.SGD(weight_decay=wd)` decays decoupled (`w -= lr·wd·w`), which with momentum
            0.9 regularises about ten times less than the PyTorch recipes it is often copied from.
            Defaults to `1e-3` (BYOL).
        nesterov: bool, use Nesterov momentum. Defaults to `False` (BYOL does not).
        clip_lr: bool, clip the local rate to `min(ratio / lr, 1)` (solo-learn's CIFAR recipes,
            `clip_lr: True`), so that a layer never moves faster than plain SGD at `lr` would move it.
            Defaults to `False` (the official code does not clip).
        trust_ratio: `"official"` (`η·‖w‖ / ‖g + wd·w‖`, BYOL's official code) or `"pytorch"`
            (`η·‖w‖ / (‖g‖ + wd·‖w‖ + 1e-8)`, PyTorch Lightning Bolts' LARS as solo-learn uses it; there a
            variable with a zero gradient gets no weight decay either). See `lars_local_rate`.
            Defaults to `"official"`.
        exclude_from_adaptation: `None`, or a list of strings; see above. Defaults to `None` (rank rule).
        weight_decay: `None` or float >= 0; coupled L2 decay of adapted variables. Defaults to `None`
            (BYOL uses 1e-6, or 1.5e-6 for 1000 epochs, and diverges without it).
        clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum, ema_overwrite_frequency,
        loss_scale_factor, gradient_accumulation_steps, name: as for every `keras.optimizers.Optimizer`.
    """

    def __init__(
        self,
        learning_rate=0.001,
        momentum=0.9,
        trust_coefficient=1e-3,
        nesterov=False,
        exclude_from_adaptation=None,
        weight_decay=None,
        clip_lr=False,
        trust_ratio="official",
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            name=name,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        if not is_number(momentum) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must be a float in [0, 1]. Received: momentum={momentum}")
        if trust_coefficient is not None and (not is_number(trust_coefficient) or trust_coefficient <= 0):
            raise ValueError(
                f"`trust_coefficient` must be None or a float > 0. Received: trust_coefficient={trust_coefficient}"
            )
        check_bool("nesterov", nesterov)
        check_bool("clip_lr", clip_lr)
        if trust_ratio not in TRUST_RATIO_STYLES:
            raise ValueError(f"`trust_ratio` must be one of {TRUST_RATIO_STYLES}. Received: trust_ratio={trust_ratio!r}")
        if weight_decay is not None and (not is_number(weight_decay) or weight_decay < 0):
            raise ValueError(
                f"`weight_decay` must be None or a float >= 0. Received: weight_decay={weight_decay}"
            )
        if exclude_from_adaptation is not None:
            # A bare string is the likely mistake here ("bias" would silently become 'b', 'i', 'a', 's').
            if isinstance(exclude_from_adaptation, str) or not all(
                isinstance(s, str) for s in exclude_from_adaptation
            ):
                raise TypeError(
                    "`exclude_from_adaptation` must be None or a list of strings. "
                    f"Received: exclude_from_adaptation={exclude_from_adaptation!r}"
                )
            exclude_from_adaptation = list(exclude_from_adaptation)
        self.momentum = float(momentum)
        self.trust_coefficient = None if trust_coefficient is None else float(trust_coefficient)
        self.nesterov = nesterov
        self.clip_lr = clip_lr
        self.trust_ratio = trust_ratio
        self.exclude_from_adaptation = exclude_from_adaptation

    def is_adapted(self, variable):
        """Whether `variable` gets weight decay and the trust ratio (see the class docstring).

        Args:
            variable: a `keras.Variable` (or `tf.Variable`).

        Returns:
            Python bool.
        """
        if self.exclude_from_adaptation is None:
            return not excluded_by_default(variable)
        path = getattr(variable, "path", variable.name)
        return not any(s in path for s in self.exclude_from_adaptation)

    def build(self, variables):
        """Create one momentum slot per variable and fix, per variable, adaptation and weight decay.

        Args:
            variables: list of the model's trainable variables.
        """
        if self.built:
            return
        super().build(variables)
        self._momentums = self.add_optimizer_variables(variables, "momentum")
        # Python bools indexed like `variables`: `update_step` reads them at trace time, never a tensor.
        self._adapted = [self.is_adapted(v) for v in variables]
        decays = self.weight_decay is not None and self.weight_decay > 0
        self._decayed = [
            decays and adapted and self._use_weight_decay(v) for v, adapted in zip(variables, self._adapted)
        ]

    def _apply_weight_decay(self, variables):
        # Keras' base optimizer calls this before `update_step` to apply decoupled decay whenever
        # `weight_decay` is set. LARS decays inside the gradient instead (see `update_step`); doing both
        # would decay twice, so the base mechanism is a no-op here.
        return

    def update_step(self, gradient, variable, learning_rate):
        """Apply one LARS update to `variable` and its momentum slot.

        Keras calls this once per variable (under `tf.distribute`: per replica, with the all-reduced
        gradient). Weight decay and the trust ratio are Python-level switches fixed in `build`.

        Args:
            gradient: tensor with the shape of `variable` (or `tf.IndexedSlices`), already unscaled,
                clipped and summed over replicas.
            variable: the model variable to update.
            learning_rate: scalar tensor, the current learning rate.
        """
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        weight_decay = ops.cast(self.weight_decay if self._decayed[index] else 0.0, dtype)
        if self._adapted[index] and self.trust_coefficient is not None:
            rate, active = _local_rate_and_mask(
                variable, gradient, self.trust_coefficient, weight_decay,
                learning_rate if self.clip_lr else None, self.trust_ratio,
            )
            decayed = (gradient + weight_decay * variable) * rate
            if self.trust_ratio == "pytorch":
                # Bolts' LARS leaves a variable with a zero gradient (or zero weights) untouched: no decay.
                # `active` is its "both norms > 0", computed once with the rate.
                decayed = ops.where(active, decayed, gradient)
            gradient = decayed
        elif self._decayed[index]:
            gradient = gradient + weight_decay * variable
        velocity = self._momentums[index]
        momentum = ops.cast(self.momentum, dtype)
        self.assign(velocity, momentum * velocity + gradient)
        if self.nesterov:
            self.assign_sub(variable, learning_rate * (momentum * velocity + gradient))
        else:
            self.assign_sub(variable, learning_rate * velocity)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "trust_coefficient": self.trust_coefficient,
                "nesterov": self.nesterov,
                "clip_lr": self.clip_lr,
                "trust_ratio": self.trust_ratio,
                "exclude_from_adaptation": self.exclude_from_adaptation,
            }
        )
        return config


def build_optimizer(config, steps_per_epoch, total_steps, model=None):
    """LARS or SGD with the warm-up + cosine schedule at the scaled learning rate.

    - `lars`: biases and BatchNorm parameters (rank ≤ 1) are excluded from weight decay and trust-ratio
      adaptation, as in the paper. Under LARS a weight moves by about lr·η = 1e-3·lr of its norm per
      step, which the paper's 300k steps absorb but a short run does not.
    - `sgd-l2`: SGD with momentum and *coupled* L2 decay on every variable, `torch.optim.SGD` exactly
      (the CIFAR baselines: lightly, solo-learn).
    - `sgd`: `keras.optimizers.SGD`, whose weight decay is decoupled (`w -= lr·wd·w`).

    Deviation from the paper, for all three: the online linear probe (a monitor, not part of BYOL) gets
    no weight decay and no trust ratio.
    """
    if config["optimizer"] not in ("lars", "sgd-l2", "sgd"):  # the names of `presets.OPTIMIZERS`
        raise ValueError(
            f"Unknown optimizer. Expected one of ('lars', 'sgd-l2', 'sgd'). Received: optimizer={config['optimizer']!r}"
        )
    learning_rate = scale_learning_rate(config["base_learning_rate"], config["batch_size"])
    warmup_steps = min(config["warmup_epochs"] * steps_per_epoch, total_steps - 1)
    schedule = WarmupCosine(learning_rate, warmup_steps, total_steps)
    probe = [] if model is None or getattr(model, "probe", None) is None else model.probe.trainable_variables
    if config["optimizer"] == "lars":
        exclude = None
        if probe:
            exclude = [v.path for v in model.trainable_variables if excluded_by_default(v)]
            exclude += [v.path for v in probe]
        return LARS(schedule, momentum=config["momentum"], weight_decay=config["weight_decay"],
                    trust_coefficient=config["trust_coefficient"], exclude_from_adaptation=exclude,
                    clip_lr=config["clip_lr"], trust_ratio=config["trust_ratio"])
    if config["optimizer"] == "sgd-l2":
        return LARS(schedule, momentum=config["momentum"], weight_decay=config["weight_decay"],
                    trust_coefficient=None, exclude_from_adaptation=[v.path for v in probe])
    optimizer = keras.optimizers.SGD(schedule, momentum=config["momentum"], weight_decay=config["weight_decay"])
    if probe:
        optimizer.exclude_from_weight_decay(var_list=probe)
    return optimizer
