"""Argument checks at the public boundary, written once for both backends.

Every public function validates its arguments before any expensive work, with one wording:
``"<name> must be an integer, got str: '3'"``, ``"<name> must be >= 1, got 0"``, and E13
(``unknown_option_error``) for a value outside a fixed set. ``bool`` is refused where an integer or a
number is expected (``True`` is an ``int`` in Python, and ``batch_size=True`` is always a mistake).
See docs/reliability.md for the error catalogue.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Iterable

import numpy as np

from zoobot.shared.errors import unknown_option_error

__all__ = [
    "is_int",
    "is_number",
    "check_int",
    "check_number",
    "check_fraction",
    "check_bool",
    "check_choice",
    "available_cpus",
    "check_save_dir",
]


def is_int(value) -> bool:
    """True for Python and numpy integers, False for ``bool`` and everything else.

    Examples
    --------
    >>> import numpy as np
    >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0)
    (True, True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """True for real numbers (Python or numpy), False for ``bool`` and everything else.

    Examples
    --------
    >>> is_number(0.5), is_number(2), is_number(False), is_number('1')
    (True, True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_bounds(name: str, value, minimum, maximum, exclusive_minimum: bool, exclusive_maximum: bool) -> None:
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        raise ValueError(f"{name} must be {'>' if exclusive_minimum else '>='} {minimum}, got {value!r}")
    if maximum is not None and (value >= maximum if exclusive_maximum else value > maximum):
        raise ValueError(f"{name} must be {'<' if exclusive_maximum else '<='} {maximum}, got {value!r}")


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None,
              allow_none: bool = False) -> int | None:
    """Return ``value`` as an ``int`` if it is an integer (not a bool) within ``[minimum, maximum]``.

    Raises
    ------
    TypeError
        If ``value`` is not an integer (``bool`` and ``3.0`` are refused).
    ValueError
        If ``value`` is outside the bounds.

    Examples
    --------
    >>> check_int('batch_size', 32, minimum=1)
    32
    >>> check_int('batch_size', 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be >= 1, got 0
    """
    if value is None and allow_none:
        return None
    if not is_int(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}: {value!r}")
    value = int(value)
    _check_bounds(name, value, minimum, maximum, False, False)
    return value


def check_number(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                 exclusive_minimum: bool = False, exclusive_maximum: bool = False, finite: bool = True,
                 allow_none: bool = False) -> float | None:
    """Return ``value`` as a ``float`` if it is a real number (not a bool) within the bounds.

    Raises
    ------
    TypeError
        If ``value`` is not a real number.
    ValueError
        If ``value`` is NaN or infinite (when ``finite``), or outside the bounds.

    Examples
    --------
    >>> check_number('learning_rate', 1e-3, minimum=0, exclusive_minimum=True)
    0.001
    >>> check_number('learning_rate', float('nan'))
    Traceback (most recent call last):
    ...
    ValueError: learning_rate must be a finite number, got nan
    """
    if value is None and allow_none:
        return None
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    _check_bounds(name, value, minimum, maximum, exclusive_minimum, exclusive_maximum)
    return value


def check_fraction(name: str, value, *, allow_zero: bool = True, allow_one: bool = True,
                   allow_none: bool = False) -> float | None:
    """Return ``value`` as a ``float`` in ``[0, 1]`` (ends included unless switched off).

    Examples
    --------
    >>> check_fraction('dropout_rate', 0.2)
    0.2
    >>> check_fraction('val_fraction', 1.0, allow_one=False)
    Traceback (most recent call last):
    ...
    ValueError: val_fraction must be < 1.0, got 1.0
    """
    return check_number(name, value, minimum=0.0, maximum=1.0, exclusive_minimum=not allow_zero,
                        exclusive_maximum=not allow_one, allow_none=allow_none)


def check_bool(name: str, value) -> bool:
    """Return ``value`` if it is a ``bool`` (numpy bools accepted), else raise ``TypeError``.

    Examples
    --------
    >>> check_bool('color', True)
    True
    >>> check_bool('color', 'yes')
    Traceback (most recent call last):
    ...
    TypeError: color must be True or False, got str: 'yes'
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__}: {value!r}")


def check_choice(name: str, value, choices: Iterable):
    """Return ``value`` if it is one of ``choices``, else raise E13 with close matches.

    Examples
    --------
    >>> check_choice('stage', 'fit', ['fit', 'test'])
    'fit'
    >>> check_choice('stage', 'fti', ['fit', 'test'])
    Traceback (most recent call last):
    ...
    ValueError: Unknown stage 'fti'. Did you mean 'fit'? Accepted values: 'fit', 'test'.
    """
    choices = list(choices)
    if value not in choices:
        raise unknown_option_error(name, value, choices)
    return value


def available_cpus() -> int:
    """CPU cores this process may use (affinity-aware, so right inside SLURM/cgroup allocations).

    Examples
    --------
    >>> available_cpus() >= 1
    True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_save_dir(save_dir, what: str = "checkpoints, logs and config.json") -> None:
    """Refuse a missing or empty ``save_dir`` (``''`` would silently write into the working directory).

    Examples
    --------
    >>> check_save_dir('')
    Traceback (most recent call last):
    ...
    ValueError: save_dir is required: the folder for checkpoints, logs and config.json (got ''; '' would write into the working directory - give a folder such as 'results/run').
    """
    if save_dir is None or not str(save_dir).strip():
        raise ValueError(f"save_dir is required: the folder for {what} (got {save_dir!r}; '' would write into the "
                         "working directory - give a folder such as 'results/run').")
