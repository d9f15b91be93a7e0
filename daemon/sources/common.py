"""Helpers every source shares: Alertmanager-compatible fingerprints and readable rejections.

The edge parsers (``alertmanager``, ``prometheus_push``, ``poller``) turn a
payload into ``daemon.model.Alert``. They compute a missing fingerprint the way
Alertmanager does, so an alert that reaches us both directly from Prometheus and
through Alertmanager dedupes to the same key, and they turn a pydantic
``ValidationError`` into an ``InputError`` whose message names the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import ValidationError

from daemon.errors import InputError

_FNV_OFFSET64 = 14695981039346656037
_FNV_PRIME64 = 1099511628211
_MASK64 = (1 << 64) - 1
_SEPARATOR = 0xFF  # cannot occur in UTF-8, so "a"+"bc" and "ab"+"c" hash differently


def _fnv_add(h: int, data: bytes) -> int:
    for byte in data:
        h ^= byte
        h = (h * _FNV_PRIME64) & _MASK64
    return h


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: FNV-1a 64 over sorted name/value pairs, 16 hex digits."""
    h = _FNV_OFFSET64
    for name in sorted(labels):
        h = _fnv_add(h, name.encode())
        h = _fnv_add(h, bytes([_SEPARATOR]))
        h = _fnv_add(h, labels[name].encode())
        h = _fnv_add(h, bytes([_SEPARATOR]))
    return f"{h:016x}"


def utc(when: datetime) -> datetime:
    """Normalise to UTC so the same instant always renders (and dedupes) the same way."""
    return when.astimezone(UTC)


def optional_utc(when: datetime | None) -> datetime | None:
    """``None`` for a missing time or Go's zero ``time.Time`` (year 1, how Go says "not set"), else UTC."""
    if when is None or when.year <= 1:
        return None
    return utc(when)


def annotation_value(annotations: Mapping[str, str], key: str = "value") -> float | None:
    """The measured value an alert rule put in an annotation (``value: "{{ $value }}"``), if numeric."""
    raw = annotations.get(key)
    if raw is None:
        return None
    try:
        number = float(raw.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def rejection(exc: ValidationError, *, what: str) -> InputError:
    """An ``InputError`` naming the first offending field(s) of ``what`` and what was expected."""
    parts: list[str] = []
    errors = exc.errors(include_url=False, include_input=False)
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    json_broken = any(err["type"] == "json_invalid" for err in errors)
    reason = "malformed_json" if json_broken else "invalid_field"
    return InputError(f"{what}: {'; '.join(parts)}{more}", reason=reason)
