"""Durations as SREs write them in rule files (``30s``, ``5m``, ``1h30m``), as in Prometheus.

Used by the rule schema; the value inside rollbackd is always float seconds.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
EXPECTED = "a duration such as 30s, 5m, 2h or 1h30m"


def parse_duration(text: str) -> float:
    """``"1h30m"`` → 5400.0; raises ``ValueError`` naming the expected form."""
    text = text.strip()
    pos, total = 0, 0.0
    for part in _PART.finditer(text):
        if part.start() != pos:
            break
        total += float(part.group(1)) * _UNITS[part.group(2)]
        pos = part.end()
    if pos != len(text) or not text:
        raise ValueError(f"expected {EXPECTED}")
    return total


def format_duration(seconds: float) -> str:
    """Prometheus-style text for an exported ``for:`` (``300.0`` → ``"5m"``)."""
    if seconds == 0:
        return "0s"
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    rest, out = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


def _coerce(value: object) -> float:
    # A bare number would be ambiguous (seconds? minutes?): the unit is mandatory.
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"expected {EXPECTED}")


Duration = Annotated[float, BeforeValidator(_coerce), PlainSerializer(format_duration, return_type=str)]
