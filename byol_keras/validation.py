"""Argument checks shared by the library: Keras-style errors that name the argument and the value.

    `batch_size` must be a positive integer. Received: batch_size=0

The rule for the error class: a number out of its range, or not a number where a number is due, is a
`ValueError`; a flag that is not a bool, or a seed that is not an integer, is a `TypeError`. The numeric
checks return the value as a plain Python `int`/`float`, so that a NumPy scalar never reaches a layer's
`get_config` (JSON).
"""

import math
import numbers


def is_number(value):
    """True for a plain real number (int, float, NumPy scalar), False for bools, tensors and the rest.

    Only plain numbers are validated eagerly: a tensor argument (a step counter that `fit` feeds in) has
    no Python value to check, and branching on it would break graph tracing.
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value):
    """True for a Python or NumPy integer, False for bools, floats (even 2.0) and the rest."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _or_none(allow_none):
    return " or None" if allow_none else ""


def check_int(name, value, minimum=1, allow_none=False):
    """`value` as an `int`; `ValueError` unless it is an integer >= `minimum` (or None if `allow_none`)."""
    if allow_none and value is None:
        return None
    if not is_integer(value) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {kind}{_or_none(allow_none)}. Received: {name}={value!r}")
    return int(value)


def check_positive_int(name, value):
    """`value` as an `int`; `ValueError` unless it is an integer (Python or NumPy) >= 1; bools are refused."""
    return check_int(name, value, minimum=1)


def check_positive_ints(name, values):
    """`values` as a tuple of ints; `ValueError` unless it is a non-empty sequence of positive integers."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or not len(values) or not all(
        is_integer(v) and v >= 1 for v in values
    ):
        raise ValueError(f"`{name}` must be a non-empty sequence of positive integers. Received: {name}={values!r}")
    return tuple(int(v) for v in values)


def check_positive_float(name, value):
    """`value` as a `float`; `ValueError` unless it is a real number > 0; bools are refused."""
    if not is_number(value) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")
    return float(value)


def check_number(name, value, low, high, low_open=False, allow_none=False):
    """`value` as a `float`; `ValueError` unless it is a number in [low, high] ((low, high] if `low_open`)."""
    if allow_none and value is None:
        return None
    if not is_number(value) or math.isnan(value) or not (value > low if low_open else value >= low) or value > high:
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"`{name}` must be a number in {bounds}{_or_none(allow_none)}. Received: {name}={value!r}")
    return float(value)


def check_pair(name, value, low, high=None, low_open=False):
    """`value` as a `(float, float)`; `ValueError` unless it is a pair min <= max inside [low, high].

    `high=None` leaves the top open (inf); `low_open` excludes `low`.
    """
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(is_number(v) for v in value)
    if ok:
        lo, hi = value
        ok = (lo > low if low_open else lo >= low) and lo <= hi and (high is None or hi <= high)
    if not ok:
        bounds = f"{'(' if low_open else '['}{low}, {'inf)' if high is None else f'{high}]'}"
        raise ValueError(
            f"`{name}` must be a pair (min, max) with min <= max inside {bounds}. Received: {name}={value!r}"
        )
    return (float(value[0]), float(value[1]))


def check_bool(name, value):
    """`value`; `TypeError` unless it is a bool (1, 0, "yes" and NumPy bools are refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return value


def check_seed(name, value, allow_none=True):
    """`value` as an `int` (or None if `allow_none`); `TypeError` unless it is an integer."""
    if allow_none and value is None:
        return None
    if not is_integer(value):
        raise TypeError(f"`{name}` must be an integer{_or_none(allow_none)}. Received: {name}={value!r}")
    return int(value)
