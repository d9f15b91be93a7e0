"""HTTP surface of the rules stage: the active set's status and a reload on demand.

``GET /api/v1/rules`` (scope read) shows what is loaded and the last reload's
outcome, including its errors; ``POST /api/v1/rules/reload`` (scope admin)
reloads now. The registry is ``state_of(request).rules``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from daemon.api.auth import Principal, require
from daemon.api.state import state_of
from daemon.rules.registry import RuleRegistry

router = APIRouter(prefix="/api/v1/rules", tags=["rules"])


def _status(registry: RuleRegistry) -> dict[str, Any]:
    result = registry.last_result
    body: dict[str, Any] = {
        "loaded": registry.loaded,
        "paths": [str(p) for p in registry.paths],
        "last_reload_at": registry.last_reload_at.isoformat() if registry.last_reload_at else None,
        "last_reload_ok": result.ok if result else None,
        "last_error": registry.last_error,
        "errors": list(result.errors) if result else [],
    }
    if registry.loaded:
        rs = registry.current
        body |= {
            "rule_count": rs.rule_count,
            "thresholds": [t.spec.name for t in rs.thresholds],
            "decisions": [d.name for d in rs.decisions],
            "files": list(rs.files),
        }
    return body


@router.get("")
async def rules_status(request: Request, _: Principal = Depends(require("read"))) -> dict[str, Any]:  # noqa: B008
    """What is loaded, when it was last reloaded, and the last reload's errors."""
    registry = state_of(request).rules
    return _status(registry)


@router.post("/reload")
async def rules_reload(request: Request, _: Principal = Depends(require("admin"))) -> dict[str, Any]:  # noqa: B008
    """Reload the rule files now; on error the running rules stay in force (see ``last_error``)."""
    registry = state_of(request).rules
    result = registry.reload()
    return {"ok": result.ok, "errors": list(result.errors), "at": result.at.isoformat(), **_status(registry)}
