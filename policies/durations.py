"""Durations and rate-limit windows as policy.json writes them (`"30s"`, `"1h30m"`, `"minute"`, `60`), in seconds.

Parsing only: an invalid value gives None, and the caller reports it at its JSON path with the hint from here, so
the accepted forms are described in one place.
"""

import math
import re
from typing import Any

__all__ = ["TIMEOUT_HINT", "WINDOWS", "WINDOW_HINT", "parse_duration", "parse_window"]

WINDOWS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}

WINDOW_HINT = 'use "second", "minute", "hour", "day", or a positive number of seconds'
TIMEOUT_HINT = 'use a duration such as "30s", "15m", "1h" or "2d", or a positive number of seconds'

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float | None:
    """Return seconds for `"30s"`, `"15m"`, `"1h"`, `"2d"`, `"1h30m"` or a positive number; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        seconds = value
    elif isinstance(value, int):
        seconds = float(value) if value.bit_length() < 1024 else math.inf  # float() of a larger int overflows
    elif isinstance(value, str) and _DURATION.fullmatch(value.strip()):
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(value))
    else:
        return None
    return seconds if seconds > 0 and math.isfinite(seconds) else None


def parse_window(value: Any) -> float | None:
    """Return seconds for a window word (`"minute"`) or anything `parse_duration` accepts; None if invalid."""
    if isinstance(value, str) and value in WINDOWS:
        return WINDOWS[value]
    return parse_duration(value)
