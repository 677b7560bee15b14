"""byol_keras.validation: the shared argument checks."""

import numpy as np
import pytest

from byol_keras.validation import (
    check_bool,
    check_int,
    check_number,
    check_pair,
    check_positive_float,
    check_positive_int,
    check_positive_ints,
    check_seed,
    is_number,
)


def test_is_number_accepts_plain_numbers_only():
    assert all(is_number(v) for v in (1, 0, -2.5, np.float32(1.0), np.int64(3)))
    assert not any(is_number(v) for v in (True, False, "1", None, [1]))


@pytest.mark.parametrize("value", [1, 7, np.int32(2), np.int64(5)])
def test_check_positive_int_accepts(value):
    result = check_positive_int("n", value)
    assert result == int(value) and type(result) is int


@pytest.mark.parametrize("value", [0, -1, 1.0, True, "3", None])
def test_check_positive_int_names_the_argument_and_value(value):
    with pytest.raises(ValueError, match=f"`n` must be a positive integer. Received: n={value!r}"):
        check_positive_int("n", value)


def test_check_positive_float():
    assert check_positive_float("t", 0.1) == 0.1
    result = check_positive_float("t", 2)
    assert result == 2.0 and type(result) is float
    for bad in (0, -0.5, True, "0.1", float("nan")):
        with pytest.raises(ValueError, match="`t` must be a positive number. Received: t="):
            check_positive_float("t", bad)


def test_numeric_checks_return_plain_python_numbers():
    value = check_positive_int("n", np.int64(3))
    assert value == 3 and type(value) is int
    assert type(check_number("p", np.float32(0.5), 0, 1)) is float
    assert check_pair("r", [np.float32(0.25), 1], 0, 1) == (0.25, 1.0)
    assert check_positive_ints("w", [np.int32(2), 4]) == (2, 4)


def test_check_int_with_a_minimum_and_none():
    assert check_int("s", 0, minimum=0) == 0
    assert check_int("c", None, minimum=2, allow_none=True) is None
    with pytest.raises(ValueError, match="`s` must be an integer >= 0. Received: s=-1"):
        check_int("s", -1, minimum=0)
    with pytest.raises(ValueError, match="`c` must be an integer >= 2 or None. Received: c=1"):
        check_int("c", 1, minimum=2, allow_none=True)
    with pytest.raises(ValueError, match="`c` must be a positive integer or None. Received: c=2.0"):
        check_int("c", 2.0, allow_none=True)


@pytest.mark.parametrize("value", [0, 1, 0.5, np.float64(0.25)])
def test_check_number_accepts_the_closed_range(value):
    assert check_number("p", value, 0, 1) == float(value)


@pytest.mark.parametrize("value", [-0.01, 1.01, True, "0.5", None, float("nan")])
def test_check_number_refuses(value):
    with pytest.raises(ValueError, match=r"`p` must be a number in \[0, 1\]. Received: p="):
        check_number("p", value, 0, 1)


def test_check_number_open_low_end():
    assert check_number("f", 1, 0, 1, low_open=True) == 1.0
    with pytest.raises(ValueError, match=r"`f` must be a number in \(0, 1\]. Received: f=0"):
        check_number("f", 0, 0, 1, low_open=True)


@pytest.mark.parametrize("value", [(0.5, 0.4), (0, 1), (0.1,), "ab", (0.1, True), None])
def test_check_pair_refuses(value):
    with pytest.raises(ValueError, match=r"`r` must be a pair \(min, max\) with min <= max inside \(0, 1\]"):
        check_pair("r", value, 0, 1, low_open=True)


def test_check_pair_open_top():
    assert check_pair("sigma", (0.1, 100), 0, None, low_open=True) == (0.1, 100.0)
    with pytest.raises(ValueError, match=r"inside \(0, inf\)"):
        check_pair("sigma", (0, 2), 0, None, low_open=True)


@pytest.mark.parametrize("value", [[], (0, 2), (2, 1.5), (2, True), "12", 3])
def test_check_positive_ints_refuses(value):
    with pytest.raises(ValueError, match="`w` must be a non-empty sequence of positive integers. Received: w="):
        check_positive_ints("w", value)


def test_check_bool_and_seed_raise_type_errors():
    assert check_bool("flag", False) is False
    for bad in (1, 0, "yes", None, np.bool_(True)):
        with pytest.raises(TypeError, match="`flag` must be a bool. Received: flag="):
            check_bool("flag", bad)
    assert check_seed("seed", None) is None
    assert check_seed("seed", np.int64(7)) == 7
    for bad in (1.0, True, "3"):
        with pytest.raises(TypeError, match="`seed` must be an integer or None. Received: seed="):
            check_seed("seed", bad)
    with pytest.raises(TypeError, match="`seed` must be an integer. Received: seed=None"):
        check_seed("seed", None, allow_none=False)
