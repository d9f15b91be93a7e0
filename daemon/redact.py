"""Keeps secrets and approval codes out of every log line, error and API response.

Two nets: values of sensitive keys are masked wherever they appear in a log
event, and every secret the daemon has loaded is registered here so that it is
scrubbed even if it ends up inside a free-text message.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

MASK = "[REDACTED]"

_SENSITIVE_KEY = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|authorization|routing[_-]?key|approval[_-]?code|^code$|otp|cookie)",
    re.IGNORECASE,
)
# Shapes that are secrets whoever logs them: Slack tokens, bearer headers.
_SENSITIVE_VALUE = re.compile(r"(xox[abposr]-[A-Za-z0-9-]+|Bearer\s+[A-Za-z0-9._~+/=-]+)")

_lock = threading.Lock()
_known: set[str] = set()


def register_secret(value: str) -> str:
    """Remember ``value`` so it is scrubbed from any text; returns it unchanged."""
    if len(value) >= 4:
        with _lock:
            _known.add(value)
    return value


def is_sensitive_key(key: str) -> bool:
    return bool(_SENSITIVE_KEY.search(key))


def scrub(text: str) -> str:
    """Replace every known secret and secret-shaped token in ``text``."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    return _SENSITIVE_VALUE.sub(MASK, text)


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` with sensitive keys masked and secrets scrubbed, recursively."""
    if key and is_sensitive_key(key) and value is not None:
        return MASK
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """structlog processor: the last line of defence before a log line is rendered."""
    return {k: (v if k in ("timestamp", "level") else redact(v, k)) for k, v in event_dict.items()}
