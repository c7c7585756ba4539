"""zoobot.shared.validation: the one wording of argument errors, checked case by case."""
import doctest

import numpy as np
import pytest

from zoobot.shared import validation
from zoobot.shared.validation import check_bool, check_choice, check_fraction, check_int, check_number


def test_docstring_examples_run():
    failures, tried = doctest.testmod(validation)
    assert tried > 10 and failures == 0


@pytest.mark.parametrize("value", [True, False, 3.0, "3", None, [3]])
def test_check_int_refuses_non_integers(value):
    with pytest.raises(TypeError, match="epochs must be an integer"):
        check_int("epochs", value)


def test_check_int_accepts_numpy_and_bounds():
    assert check_int("n", np.int32(4), minimum=1, maximum=4) == 4
    assert type(check_int("n", np.int64(2))) is int
    assert check_int("n", None, allow_none=True) is None
    with pytest.raises(ValueError, match=r"n must be <= 4, got 5"):
        check_int("n", 5, maximum=4)


def test_check_number_bounds_and_finiteness():
    assert check_number("lr", np.float32(0.5)) == 0.5
    with pytest.raises(ValueError, match=r"lr must be > 0, got 0.0"):
        check_number("lr", 0, minimum=0, exclusive_minimum=True)
    with pytest.raises(ValueError, match="finite"):
        check_number("lr", float("inf"))
    assert check_number("x", float("inf"), finite=False) == float("inf")
    with pytest.raises(ValueError, match="finite"):
        check_number("x", float("nan"), finite=False)
    with pytest.raises(TypeError, match="lr must be a number, got bool"):
        check_number("lr", True)


def test_check_fraction_ends():
    assert check_fraction("p", 0) == 0.0
    with pytest.raises(ValueError, match=r"p must be > 0.0"):
        check_fraction("p", 0, allow_zero=False)
    with pytest.raises(ValueError, match=r"p must be <= 1.0, got 1.5"):
        check_fraction("p", 1.5)


def test_check_bool_and_choice():
    assert check_bool("b", np.bool_(True)) is True
    with pytest.raises(TypeError, match="b must be True or False, got int: 1"):
        check_bool("b", 1)
    with pytest.raises(ValueError, match=r"Unknown stage 'tset'. Did you mean 'test'\?"):
        check_choice("stage", "tset", ["fit", "test"])
