"""report.json: the analysis dict as strict JSON (NaN/infinity become null)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def to_strict_json(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): to_strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_strict_json(v) for v in value]
    return value


def dumps(analysis: dict) -> str:
    return json.dumps(to_strict_json(analysis), indent=1, allow_nan=False, default=str)


def write_json(analysis: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(dumps(analysis) + "\n", encoding="utf-8")
    return path
