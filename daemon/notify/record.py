"""A read-only view of an outbox payload, shared by every notifier's rendering.

The outbox payload is ``daemon.store.outbox.event_payload``: the event's kind,
severity and summary plus the incident's decision record as JSON. The record
is written by ``incidents`` and may grow, so this view reads it tolerantly
(missing fields become empty values) and never fails on a field it does not
know. Approval codes are never part of the record; ``redact`` runs again over
anything a notifier sends, as a second net.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.errors import PermanentError
from daemon.model import NotificationKind, Severity
from daemon.redact import redact


def _as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


@dataclass(frozen=True, slots=True)
class Approval:
    approver: str
    role: str
    verdict: str
    via: str


@dataclass(frozen=True, slots=True)
class IncidentView:
    """What a notifier needs to say about one incident at one step."""

    incident_id: str
    kind: NotificationKind
    severity: Severity
    summary: str
    channels: tuple[str, ...]
    outbox_id: int | None
    state: str
    is_open: bool
    rule: str
    reason: str
    action: str
    targets: tuple[str, ...]
    measured: Mapping[str, Any]
    required_roles: Mapping[str, int]
    quorum: str
    approvals: tuple[Approval, ...]
    acknowledged_by: str | None
    to_revision: int | None
    deploy: Mapping[str, Any]
    actions: tuple[Mapping[str, Any], ...]
    verify_detail: str

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> IncidentView:
        """Parse an outbox payload; a payload without id, kind or severity is a permanent failure."""
        try:
            incident_id = str(payload["incident_id"])
            kind = NotificationKind(payload["kind"])
            severity = Severity(payload["severity"])
        except (KeyError, ValueError) as exc:
            raise PermanentError(f"outbox payload is malformed: {exc}", reason="bad_payload") from None
        rec = _as_map(redact(dict(_as_map(payload.get("incident")))))
        decision = _as_map(rec.get("decision"))
        approval = _as_map(decision.get("approval"))
        outbox_id = payload.get("outbox_id")
        return cls(
            incident_id=incident_id,
            kind=kind,
            severity=severity,
            summary=str(payload.get("summary") or f"incident {incident_id}"),
            channels=tuple(str(c) for c in _as_list(payload.get("channels"))),
            outbox_id=int(outbox_id) if isinstance(outbox_id, int) else None,
            state=str(rec.get("state") or kind.value),
            is_open=bool(rec.get("open", True)),
            rule=str(decision.get("rule") or rec.get("rule") or ""),
            reason=str(decision.get("reason") or ""),
            action=str(decision.get("action") or ""),
            targets=tuple(str(t) for t in _as_list(decision.get("targets") or rec.get("targets"))),
            measured=_as_map(decision.get("measured")),
            required_roles={str(k): int(v) for k, v in _as_map(approval.get("roles")).items() if isinstance(v, int)},
            quorum=str(approval.get("mode") or "all_of"),
            approvals=tuple(
                Approval(
                    approver=str(a.get("approver", "")),
                    role=str(a.get("role", "")),
                    verdict=str(a.get("verdict", "approve")),
                    via=str(a.get("via", "")),
                )
                for a in (_as_map(x) for x in _as_list(rec.get("approvals")))
            ),
            acknowledged_by=(str(rec["acknowledged_by"]) if rec.get("acknowledged_by") else None),
            to_revision=decision.get("to_revision") if isinstance(decision.get("to_revision"), int) else None,
            deploy=_as_map(decision.get("deploy")),
            actions=tuple(_as_map(x) for x in _as_list(rec.get("actions"))),
            verify_detail=str(rec.get("verify_detail") or ""),
        )

    @property
    def missing_roles(self) -> dict[str, int]:
        """Roles still short of approvals (all_of), or every role when none has approved yet (any_of)."""
        got: dict[str, int] = {}
        for a in self.approvals:
            if a.verdict == "approve":
                got[a.role] = got.get(a.role, 0) + 1
        if self.quorum == "any_of" and any(got.get(r, 0) >= n for r, n in self.required_roles.items()):
            return {}
        return {r: n - got.get(r, 0) for r, n in self.required_roles.items() if got.get(r, 0) < n}

    @property
    def awaiting_approval(self) -> bool:
        return self.is_open and self.state == "awaiting_approval"

    def details(self) -> dict[str, Any]:
        """The decision record as structured details (PagerDuty custom_details, logs): never codes."""
        out: dict[str, Any] = {
            "incident_id": self.incident_id,
            "state": self.state,
            "rule": self.rule,
            "severity": self.severity.value,
            "action": self.action,
            "reason": self.reason,
            "targets": list(self.targets),
            "measured": dict(self.measured),
            "revisions": {
                "deployed": self.deploy.get("revision"),
                "rollback_to": self.to_revision,
                "version": self.deploy.get("version"),
                "image": self.deploy.get("image"),
                "author": self.deploy.get("author"),
            },
            "approvals": [
                {"approver": a.approver, "role": a.role, "verdict": a.verdict, "via": a.via} for a in self.approvals
            ],
            "waiting_for_roles": self.missing_roles if self.awaiting_approval else {},
            "acknowledged_by": self.acknowledged_by,
        }
        if self.actions:
            out["actions"] = [dict(a) for a in self.actions]
        if self.verify_detail:
            out["verification"] = self.verify_detail
        result: dict[str, Any] = redact(out)
        return result
