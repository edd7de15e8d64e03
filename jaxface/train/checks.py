"""One-line config checks recipes share in `validate_config`: each raises ValueError naming the key
and what is allowed, before anything is written."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping


def one_of(value: Any, allowed: Iterable, key: str) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{key}={value!r}; allowed: {', '.join(map(str, allowed))}")


def in_range(value: Any, low: float, high: float, key: str) -> None:
    """low <= value <= high, a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            not low <= value <= high:
        raise ValueError(f"{key}={value} must be in [{low}, {high}]")


def non_negative(section: Mapping[str, Any], key: str) -> None:
    """Every value of `section` (e.g. loss weights) is a finite number >= 0."""
    for name, value in section.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{key}.{name}={value} must be a finite number >= 0")
