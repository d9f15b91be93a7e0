"""CEL conditions of decision rules (``when:``) and of the irreversibility guard.

Compiled once per load; evaluated against the alert, its labels, its measured
value and the correlated deployment. An evaluation error (a missing label,
``value`` absent) means "does not match", never a crash.

Two engines, one meaning. The compiled one is Google's C++ CEL runtime
(cel-expr-python): an activation costs a few microseconds and an evaluation
about one, where cel-python's interpreter spent ~200 µs converting the
activation and walking a lark tree. cel-python stays the reference: it parses
first, so ``rules check`` reports the same syntax errors at the same place,
and it evaluates what the compiled runtime cannot take with the same meaning
(docs/rules.md lists the cases):

* an expression the C++ checker rejects although cel-python accepts it (a
  ternary whose branches differ in type, a function cel-python resolves only
  when called) is interpreted, and ``rules check`` warns about it;
* arithmetic mixing int and double (``value * 100 > 5``) is an error in the
  CEL specification, which cel-python lets through: when the compiled result
  is exactly that error, cel-python answers.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import celpy
from cel_expr_python import cel as cxx
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from daemon.deploys import DeployEvent
from daemon.logs import get_logger
from daemon.model import Alert

log = get_logger(__name__)

VARIABLES = ("alert", "labels", "annotations", "value", "deploy")
_INTERPRETER = celpy.Environment()
# Every variable is dyn: `value` is a double or null, and cel-python checked no types either.
_COMPILER = cxx.NewEnv(variables=dict.fromkeys(VARIABLES, cxx.Type.DYN))
_BOOL = cxx.Type.BOOL
_ERROR = cxx.Type.ERROR
# The C++ runtime's error for int/double arithmetic, which cel-python computes (int(value * 100) > 5).
_NUMBER = r"(?:int64|uint64|double)"
_MIXED_ARITHMETIC = re.compile(rf"No matching overloads found : _[-+*/%]_\({_NUMBER}, {_NUMBER}\)")


class Activation:
    """The variables of one (alert, deploy) pair, built once and shared by every rule evaluated on them.

    The compiled runtime's activation is made on first use; cel-python's (a deep
    conversion into its own types) only if an interpreted condition needs it.
    """

    __slots__ = ("_compiled", "_interpreted", "data")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self._compiled: Any = None
        self._interpreted: Any = None

    def compiled(self) -> Any:
        if self._compiled is None:
            self._compiled = _COMPILER.Activation(self.data)
        return self._compiled

    def interpreted(self) -> Any:
        if self._interpreted is None:
            self._interpreted = json_to_cel(self.data)
        return self._interpreted


@functools.lru_cache(maxsize=4096)
def _interpreted(source: str) -> Any:
    """cel-python's program for ``source``; its parse errors are the messages of ``rules check``."""
    try:
        ast = _INTERPRETER.compile(source)
    except CELParseError as exc:
        col = getattr(exc, "column", None)
        where = f" at character {col}" if col else ""
        raise ValueError(f"expected a valid CEL expression, syntax error{where}: {_caret(source, col)}") from exc
    return _INTERPRETER.program(ast)


@functools.lru_cache(maxsize=4096)
def _compiled(source: str) -> tuple[Any, str | None]:
    """The compiled expression, or None and the checker's reason; parse once per distinct expression."""
    try:
        return _COMPILER.compile(source), None
    except RuntimeError as exc:
        # "INVALID_ARGUMENT: ERROR: <input>:1:13: found no matching overload ..." and a caret drawing.
        first = str(exc).splitlines()[0]
        return None, first.split(": ", 3)[-1] if first.count(": ") >= 3 else first


class CelCondition:
    """A compiled CEL expression; ``holds()`` is True only for a boolean true result."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._program = _interpreted(source)  # raises the syntax error first, as before
        self._compiled, self.interpreted_because = _compiled(source)

    def holds(self, act: Activation, *, rule: str) -> bool:
        if self._compiled is not None:
            result = self._compiled.eval(act.compiled())
            kind = result.type()
            if kind == _BOOL:
                return result.value() is True
            if kind != _ERROR or not _MIXED_ARITHMETIC.search(str(result.value())):
                log.debug("cel.evaluation_failed", rule=rule, error=str(result.value())[:200])
                return False
        return self._interpret(act, rule=rule)

    def _interpret(self, act: Activation, *, rule: str) -> bool:
        try:
            result = self._program.evaluate(act.interpreted())
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


def activation(alert: Alert, deploy: DeployEvent | None) -> Activation:
    """The variables a condition sees: ``alert``, ``labels``, ``annotations``, ``value``, ``deploy``.

    ``value`` is null when the source measured none; a comparison with it then fails (no match).
    """
    labels = dict(alert.labels)
    annotations = dict(alert.annotations)
    data: dict[str, Any] = {
        "alert": {
            "name": alert.name,
            "status": alert.status.value,
            "labels": labels,
            "annotations": annotations,
            "source": alert.source,
        },
        "labels": labels,
        "annotations": annotations,
        "value": alert.value,
        # Always a map, so `deploy.migration` needs no null check; `deploy.present` says if one was found.
        "deploy": {
            "present": deploy is not None,
            "service": deploy.service if deploy else "",
            "namespace": deploy.namespace if deploy else "",
            "deployment": deploy.deployment if deploy else "",
            "kind": deploy.kind.value if deploy else "",
            # The kind of the workload deployed (deployment, statefulset, daemonset): `kind` is the event's type.
            "workload_kind": deploy.workload_kind.value if deploy else "",
            "revision": (deploy.revision or 0) if deploy else 0,
            "image": deploy.image if deploy else "",
            "version": deploy.version if deploy else "",
            "author": deploy.author if deploy else "",
            "migration": deploy.migration if deploy else False,
        },
    }
    return Activation(data)


def check_compiles(source: str) -> str | None:
    """The parse error of ``source``, or None if it compiles."""
    try:
        CelCondition(source)
    except ValueError as exc:
        return str(exc)
    return None
