"""byol_keras.validation: the shared argument checks."""

import numpy as np
import pytest

from byol_keras.validation import check_positive_float, check_positive_int, is_number


def test_is_number_accepts_plain_numbers_only():
    assert all(is_number(v) for v in (1, 0, -2.5, np.float32(1.0), np.int64(3)))
    assert not any(is_number(v) for v in (True, False, "1", None, [1]))


@pytest.mark.parametrize("value", [1, 7, np.int32(2), np.int64(5)])
def test_check_positive_int_accepts(value):
    check_positive_int("n", value)


@pytest.mark.parametrize("value", [0, -1, 1.0, True, "3", None])
def test_check_positive_int_names_the_argument_and_value(value):
    with pytest.raises(ValueError, match=f"`n` must be a positive integer. Received: n={value!r}"):
        check_positive_int("n", value)


def test_check_positive_float():
    check_positive_float("t", 0.1)
    check_positive_float("t", 2)
    for bad in (0, -0.5, True, "0.1", float("nan")):
        with pytest.raises(ValueError, match="`t` must be a positive number. Received: t="):
            check_positive_float("t", bad)
