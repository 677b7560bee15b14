"""The BYOL regression loss, as a pure function on `keras.ops`."""

from keras import ops

# Guards the norm against zero vectors: max(‖x‖², eps²) keeps the gradient finite at x = 0.
_NORM_EPS = 1e-12


def l2_normalize(x, axis=-1):
    """Divide `x` by its L2 norm along `axis`; a zero vector stays zero (no NaN, finite gradient).

    Args:
        x: tensor `(..., dim)`.
        axis: the axis to normalise over. Defaults to -1.

    Returns:
        Tensor of the same shape and dtype as `x`.
    """
    return ops.normalize(x, axis=axis, order=2, epsilon=_NORM_EPS)


def byol_loss(p, z):
    """Per-example BYOL loss 2 − 2·cos(p, z) = ‖p/‖p‖ − z/‖z‖‖².

    Grill et al. (2020), eq. 2: "we define the following mean squared error between the normalized
    predictions and target projections, L ≜ ‖q̄ − z̄'‖² = 2 − 2·⟨q, z'⟩ / (‖q‖·‖z'‖)".
    Symmetric in its two arguments. The stop-gradient on the target is the caller's job (see
    `BYOL.train_step`), so the function stays a plain formula that can be tested with three numbers.
    Computed in float32 whatever the input dtype (mixed precision).

    Args:
        p: `(batch, dim)` online predictions.
        z: `(batch, dim)` target projections.

    Returns:
        `(batch,)` float32 losses in [0, 4]: 0 for equal directions, 2 for orthogonal, 4 for opposite.
        A zero vector has cosine 0 with everything, so its loss is 2.

    Example:

    >>> import numpy as np
    >>> float(byol_loss(np.array([[1.0, 0.0]]), np.array([[0.0, 3.0]]))[0])
    2.0
    """
    p = l2_normalize(ops.cast(p, "float32"))
    z = l2_normalize(ops.cast(z, "float32"))
    return 2.0 - 2.0 * ops.sum(p * z, axis=-1)
