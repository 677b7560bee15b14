"""The paper's two views (Table 6) as `BYOLView` constructor arguments: `view_configs`."""

from byol_keras.validation import check_bool
from byol_keras.views.view import VIEW_ARGS

# The per-view probabilities of Table 6; everything else is shared by the two views.
PAPER_VIEW_PROBS = (
    {"blur_prob": 1.0, "solarize_prob": 0.0},
    {"blur_prob": 0.1, "solarize_prob": 0.2},
)
# What views of images that are not RGB (`channels` other than 3) go without.
RGB_ONLY = {"saturation": 0.0, "hue": 0.0, "grayscale_prob": 0.0}


def view_configs(image_size, blur=True, **overrides):
    """The constructor arguments of the paper's two views (Table 6), optionally overridden.

    View 1 always blurs and never solarizes; view 2 blurs with probability 0.1 and solarizes with
    probability 0.2. Everything else is shared.

    Args:
        image_size: int, side of the augmented images.
        blur: bool, `False` drops the blur from both views (the usual practice at 32 px, where a
            blur destroys the image). Defaults to `True`.
        **overrides: `BYOLView` arguments (not `image_size` or `seed`), applied to both views.

    Returns:
        `(view1_kwargs, view2_kwargs)`, two dicts of `BYOLView` keyword arguments (without `seed`).

    Example:

    >>> first, second = view_configs(224)
    >>> (first["blur_prob"], first["solarize_prob"], second["blur_prob"], second["solarize_prob"])
    (1.0, 0.0, 0.1, 0.2)
    >>> BYOLView(**first).blur_kernel_size
    23
    """
    unknown = sorted(set(overrides) - set(VIEW_ARGS))
    if unknown:
        raise TypeError(
            f"Unknown view argument(s) {unknown}; expected some of {list(VIEW_ARGS)}. "
            f"Received: overrides={overrides}"
        )
    check_bool("blur", blur)
    configs = []
    for probs in PAPER_VIEW_PROBS:
        config = {"image_size": image_size, **probs}
        if overrides.get("channels", 3) != 3:
            config.update(RGB_ONLY)  # grayscale views: brightness and contrast only
        if not blur:
            config["blur_prob"] = 0.0
        config.update(overrides)
        configs.append(config)
    return tuple(configs)
