"""CEL conditions of decision rules (``when:``) and of the irreversibility guard.

Compiled once per load with cel-python; evaluated against the alert, its
labels, its measured value and the correlated deployment. An evaluation error
(a missing label, ``value`` absent) means "does not match", never a crash.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, cast

import celpy
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from daemon.deploys import DeployEvent
from daemon.logs import get_logger
from daemon.model import Alert

log = get_logger(__name__)

_ENV = celpy.Environment()


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    """Parse once per distinct expression: large rule sets repeat the same conditions."""
    try:
        ast = _ENV.compile(source)
    except CELParseError as exc:
        col = getattr(exc, "column", None)
        where = f" at character {col}" if col else ""
        raise ValueError(f"expected a valid CEL expression, syntax error{where}: {_caret(source, col)}") from exc
    return _ENV.program(ast)


class CelCondition:
    """A compiled CEL expression; ``holds()`` is True only for a boolean true result."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._program = _compile(source)

    def holds(self, activation: Mapping[str, Any], *, rule: str) -> bool:
        try:
            result = self._program.evaluate(activation)
        except (CELEvalError, TypeError, ValueError, KeyError, ZeroDivisionError) as exc:
            log.debug("cel.evaluation_failed", rule=rule, error=str(exc)[:200])
            return False
        return isinstance(result, celpy.celtypes.BoolType) and bool(result)


def _caret(source: str, col: int | None) -> str:
    """The expression with ``⟨here⟩`` inserted where the parser gave up (one line, for error lists)."""
    flat = " ".join(source.split())
    if not col or col > len(flat) + 1:
        return repr(flat)
    return repr(flat[: col - 1] + "⟨here⟩" + flat[col - 1 :])


def activation(alert: Alert, deploy: DeployEvent | None) -> dict[str, Any]:
    """The variables a condition sees: ``alert``, ``labels``, ``annotations``, ``value``, ``deploy``.

    ``value`` is null when the source measured none; a comparison with it then fails (no match).
    """
    data: dict[str, Any] = {
        "alert": {
            "name": alert.name,
            "status": alert.status.value,
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            "source": alert.source,
        },
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "value": alert.value,
        # Always a map, so `deploy.migration` needs no null check; `deploy.present` says if one was found.
        "deploy": {
            "present": deploy is not None,
            "service": deploy.service if deploy else "",
            "namespace": deploy.namespace if deploy else "",
            "deployment": deploy.deployment if deploy else "",
            "kind": deploy.kind.value if deploy else "",
            "revision": (deploy.revision or 0) if deploy else 0,
            "image": deploy.image if deploy else "",
            "version": deploy.version if deploy else "",
            "author": deploy.author if deploy else "",
            "migration": deploy.migration if deploy else False,
        },
    }
    return cast(dict[str, Any], json_to_cel(data))


def check_compiles(source: str) -> str | None:
    """The parse error of ``source``, or None if it compiles."""
    try:
        CelCondition(source)
    except ValueError as exc:
        return str(exc)
    return None
