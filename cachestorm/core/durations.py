"""The one duration parser: `--duration 30s`, an experiment's `for: 2m`, a fault's `after: 500ms`."""

from __future__ import annotations

import math
import re
from typing import Any

from cachestorm.core.errors import CachestormError

_DURATION = re.compile(r"([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class DurationError(CachestormError):
    """Not a duration; the message names where it came from (a flag, a file's field)."""


def parse_duration(value: Any, what: str = "duration") -> float:
    """Seconds from a number (seconds) or a string: "30" or "30s", "500ms", "2m", "1h"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value.strip().lower()) if isinstance(value, str) else None
        if match is None:
            raise DurationError(f"{what}: {value!r} is not a duration; use e.g. 30s, 2m or 500ms")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds < 0:
        raise DurationError(f"{what}: must not be negative (got {value})")
    if not math.isfinite(seconds):
        raise DurationError(f"{what}: {value!r} is not a finite duration")
    return seconds
