"""Argument checks shared by the library: Keras-style errors that name the argument and the value.

    `batch_size` must be a positive integer. Received: batch_size=0
"""

import numbers


def is_number(value):
    """True for a plain real number (int, float, NumPy scalar), False for bools, tensors and the rest.

    Only plain numbers are validated eagerly: a tensor argument (a step counter that `fit` feeds in) has
    no Python value to check, and branching on it would break graph tracing.
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive_int(name, value):
    """Raise `ValueError` unless `value` is an integer (Python or NumPy) >= 1; bools are refused."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def check_positive_float(name, value):
    """Raise `ValueError` unless `value` is a real number > 0; bools are refused."""
    if not is_number(value) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")
