"""JSON for machines and browsers, strictly: no bare NaN or Infinity (RFC 8259 has neither).

A float column's NaN or ±Infinity travels through the diff as a number (Python's json reads and writes
it by default): `dumps` writes such a value as the string "NaN", "Infinity" or "-Infinity", nested
anywhere, so `reflow show --format json`, `plan --json` and the HTML report stay parseable. The plan flags
those values (`validate.finite`); they are never sent.
"""

from __future__ import annotations

import json
import math
from typing import Any

_SHOWN = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def ready(value: Any) -> Any:
    """`value` with every non-finite float, nested or not, replaced by its name."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _SHOWN[repr(value)]
    if isinstance(value, dict):
        return {k: ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [ready(v) for v in value]
    return value


def dumps(data: Any, **options: Any) -> str:
    """json.dumps(data, default=str, **options), refusing to write NaN or Infinity."""
    options.setdefault("default", str)
    try:
        return json.dumps(data, allow_nan=False, **options)
    except ValueError:                  # a non-finite number somewhere: the rare case pays for the walk
        return json.dumps(ready(data), allow_nan=False, **options)
