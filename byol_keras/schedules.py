"""BYOL's schedules: the cosine EMA rate of the target network and the warm-up + cosine learning rate.

Both follow the paper (Grill et al. 2020, arXiv 2006.07733) and its official code (deepmind-research
`byol/utils/schedules.py`). The maths are pure functions on `keras.ops` (they take Python numbers or
tensors, and return float32 tensors); `WarmupCosine` only wraps `warmup_cosine` so that an optimizer can
call it and a saved model can rebuild it.
"""

import math

import keras
from keras import ops

from byol_keras.validation import check_int, check_positive_int, is_number



def _cosine_to_zero(step, total_steps):
    """`(cos(π·k/K) + 1) / 2` with `k` clamped to `[0, K]`: 1 at k = 0, 1/2 at K/2, 0 from K on.

    Args:
        step: float32 scalar (or any shape) tensor, `k`.
        total_steps: float32 scalar tensor, `K > 0`.

    Returns:
        float32 tensor with the shape of `step`.
    """
    progress = ops.clip(step, 0.0, total_steps) / total_steps
    return (ops.cos(math.pi * progress) + 1.0) / 2.0


def target_tau(step, total_steps, base_tau):
    """The EMA rate τ of the target network at a global step: cosine from `base_tau` up to 1.

    Paper, section 3.2: "we start from τ_base = 0.996 and increase τ to one during training. Specifically,
    we set τ ≜ 1 − (1 − τ_base)·(cos(πk/K) + 1)/2 with k the current training step and K the maximum
    number of training steps." The step is clamped to `[0, K]`, so τ stays at 1 after K (the official
    code clamps the same way).

    `step` must be the global step of the whole run, also after a resume (not a per-epoch or
    per-`fit`-call counter), or τ restarts from `base_tau`.

    Example:

    >>> round(float(target_tau(0, 100, 0.99)), 6)
    0.99
    >>> round(float(target_tau(50, 100, 0.99)), 6)
    0.995
    >>> round(float(target_tau(100, 100, 0.99)), 6)
    1.0

    Args:
        step: int or float, Python number or scalar tensor (any shape works elementwise); the global step
            `k`.
        total_steps: positive int or float (or tensor), `K`.
        base_tau: float in [0, 1] (or tensor), τ_base. The paper uses 0.996 for 1000 epochs.

    Returns:
        float32 tensor with the shape of `step`, τ in `[base_tau, 1]`.
    """
    if is_number(total_steps) and total_steps <= 0:
        raise ValueError(f"`total_steps` must be > 0. Received: total_steps={total_steps}")
    if is_number(base_tau) and not 0.0 <= base_tau <= 1.0:
        raise ValueError(f"`base_tau` must be in [0, 1]. Received: base_tau={base_tau}")
    step = ops.cast(step, "float32")
    total_steps = ops.cast(total_steps, "float32")
    base_tau = ops.cast(base_tau, "float32")
    return 1.0 - (1.0 - base_tau) * _cosine_to_zero(step, total_steps)


def warmup_cosine(step, base_learning_rate, warmup_steps, total_steps):
    """Linear warm-up from 0 to `base_learning_rate`, then cosine decay to 0 at `total_steps`.

    Paper, appendix C: "the learning rate is linearly increased for the first 10 epochs, then decayed with
    a cosine decay schedule". Precisely, with k the step, W = `warmup_steps`, T = `total_steps`:

        lr(k) = base · k / W                                        for 0 ≤ k < W
        lr(k) = base · (cos(π·min(k − W, T − W) / (T − W)) + 1) / 2   for k ≥ W

    so lr(0) = 0 (the official code's choice: the very first update does not move the weights),
    lr(W) = base, lr(W + (T − W)/2) = base/2 and lr(k) = 0 for every k ≥ T. With W = 0 there is no
    warm-up and lr(0) = base. Negative steps are treated as 0.

    Example:

    >>> round(float(warmup_cosine(5, 0.4, 10, 110)), 6)  # half-way through the warm-up
    0.2
    >>> round(float(warmup_cosine(60, 0.4, 10, 110)), 6)  # half-way through the cosine
    0.2

    Args:
        step: int or float, Python number or tensor (elementwise); an optimizer passes its iteration
            count, which is 0 for the first update.
        base_learning_rate: float >= 0, the peak learning rate (already scaled with
            `scale_learning_rate` if the paper's rule is wanted).
        warmup_steps: int >= 0, W.
        total_steps: int > `warmup_steps`, T.

    Returns:
        float32 tensor with the shape of `step`.
    """
    _validate_warmup_cosine(base_learning_rate, warmup_steps, total_steps)
    step = ops.maximum(ops.cast(step, "float32"), 0.0)
    base = ops.cast(base_learning_rate, "float32")
    # `max(W, 1)` only keeps the division defined when W = 0; the warm-up branch is never selected then.
    warmup = base * step / float(max(warmup_steps, 1))
    decay = base * _cosine_to_zero(step - float(warmup_steps), float(total_steps - warmup_steps))
    return ops.where(step < float(warmup_steps), warmup, decay)


def _validate_warmup_cosine(base_learning_rate, warmup_steps, total_steps):
    if not is_number(base_learning_rate) or base_learning_rate < 0:
        raise ValueError(
            f"`base_learning_rate` must be a number >= 0. Received: base_learning_rate={base_learning_rate}"
        )
    check_int("warmup_steps", warmup_steps, minimum=0)
    check_positive_int("total_steps", total_steps)
    if warmup_steps >= total_steps:
        raise ValueError(
            "`warmup_steps` must be smaller than `total_steps`, or no step is left for the cosine decay. "
            f"Received: warmup_steps={warmup_steps}, total_steps={total_steps}"
        )


@keras.saving.register_keras_serializable(package="byol_keras")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Learning-rate schedule: linear warm-up from 0, then cosine decay to 0 (see `warmup_cosine`).

    The same numbers as Keras' `CosineDecay(0.0, total_steps - warmup_steps, warmup_target=base,
    warmup_steps=warmup_steps)`, which Keras 3.15 computes with `ops.cond` on the step and so cannot
    evaluate a vector of steps (a curve, a TensorBoard plot) in one call; this one is elementwise.

    The optimizer calls it with its iteration count, so the first update uses lr = 0 and the learning
    rate reaches `base_learning_rate` at iteration `warmup_steps`.

    Example:

    ```python
    schedule = WarmupCosine(scale_learning_rate(0.2, batch_size=512), warmup_steps=10 * steps_per_epoch,
                            total_steps=1000 * steps_per_epoch)
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)
    ```

    Args:
        base_learning_rate: float >= 0, the peak learning rate.
        warmup_steps: int >= 0, length of the linear warm-up in optimizer steps.
        total_steps: int > `warmup_steps`, the step at which the learning rate reaches 0 (and stays).
    """

    def __init__(self, base_learning_rate, warmup_steps, total_steps):
        super().__init__()
        _validate_warmup_cosine(base_learning_rate, warmup_steps, total_steps)
        self.base_learning_rate = float(base_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        return warmup_cosine(step, self.base_learning_rate, self.warmup_steps, self.total_steps)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
        }


def scale_learning_rate(base_learning_rate, batch_size):
    """The paper's linear scaling rule: `base_learning_rate × batch_size / 256`.

    Paper, appendix C: "learning rate ... LR = 0.2 × BatchSize/256". The official presets give the base
    rate for LARS (0.2 at 1000 epochs, 0.3 at 300, 0.45 at 40 and 100).

    Example:

    >>> scale_learning_rate(0.2, 4096)
    3.2

    Args:
        base_learning_rate: float >= 0, the rate for a batch of 256.
        batch_size: int > 0, the global batch size (over all replicas).

    Returns:
        Python float.
    """
    if not is_number(base_learning_rate) or base_learning_rate < 0:
        raise ValueError(
            f"`base_learning_rate` must be a number >= 0. Received: base_learning_rate={base_learning_rate}"
        )
    check_positive_int("batch_size", batch_size)
    return float(base_learning_rate) * batch_size / 256.0
