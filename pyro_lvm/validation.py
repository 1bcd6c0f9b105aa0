"""Checks of values at the public boundary, with messages that say what was expected.

>>> positive_int("--particles", 5)
5
>>> positive_int("--particles", 2.5)
Traceback (most recent call last):
...
ValueError: --particles must be a positive integer, got 2.5
"""

from __future__ import annotations

import math
from typing import Any

import torch


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is a whole number of at least 1."""
    if not _is_int(value) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


#: the most importance samples per point accepted: at the ~10^5 samples a second of a small model
#: on a CPU, 10^7 per point over a 10,000-point test set is already weeks of work
MAX_PARTICLES = 10 ** 7


def particle_count(name: str, value: Any) -> int:
    """A number of importance samples per point: a whole number from 1 to :data:`MAX_PARTICLES`.

    >>> particle_count("--particles", 10 ** 12)
    Traceback (most recent call last):
    ...
    ValueError: --particles must be at most 10000000 (10^7 samples per point), got 1000000000000
    """
    number = positive_int(name, value)
    if number > MAX_PARTICLES:
        raise ValueError(f"{name} must be at most {MAX_PARTICLES} (10^7 samples per point), got {value!r}")
    return number


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is a whole number of at least 0."""
    if not _is_int(value) or int(value) < 0:
        raise ValueError(f"{name} must be an integer of at least 0, got {value!r}")
    return int(value)


def positive_float(name: str, value: Any) -> float:
    """``value`` as a ``float`` if it is a finite number above 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


def device(value: Any) -> torch.device:
    """A device this machine has: ``cpu``, ``cuda`` or ``cuda:N``."""
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {value!r}: expected cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {value!r} is not supported: expected cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {value!r} was asked for but torch sees no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev
