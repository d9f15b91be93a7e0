"""Plain values that flow through the pipeline once past the edge.

``sources`` turn payloads into these; ``rules`` turn them into decisions;
``incidents``, ``actions`` and ``notify`` act on them. They are frozen and
carry no I/O, so every stage can be tested on its own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from daemon.deploys import DeployEvent

# Re-exported (mypy strict needs the alias): every stage names targets through the model.
from daemon.target import Target as Target  # noqa: PLC0414 - explicit re-export
from daemon.target import target_from_labels


def frozen_map(data: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(data or {}))


class AlertStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as Alertmanager, Prometheus or the poller reported it.

    ``target`` is the workload the labels name (``daemon.target.target_from_labels``), decided
    once by the source that built the alert; every later stage reads it, never the labels.
    """

    name: str
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    fingerprint: str
    source: str
    target: Target | None
    ends_at: datetime | None = None
    generator_url: str = ""
    value: float | None = None

    @property
    def dedupe_key(self) -> str:
        """Same alert, same status, same episode: a redelivery, not news."""
        return f"alert:{self.fingerprint}:{self.status.value}:{self.starts_at.isoformat()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat() if self.ends_at else None,
            "fingerprint": self.fingerprint,
            "source": self.source,
            "target": self.target.to_json() if self.target else None,
            "generator_url": self.generator_url,
            "value": self.value,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        labels = frozen_map(data["labels"])
        if "target" in data:
            target = Target.from_json(data["target"]) if data["target"] else None
        else:  # written before alerts carried their target: the same rule, applied now
            target = target_from_labels(labels)
        return cls(
            name=data["name"],
            status=AlertStatus(data["status"]),
            labels=labels,
            annotations=frozen_map(data.get("annotations")),
            starts_at=datetime.fromisoformat(data["starts_at"]),
            ends_at=datetime.fromisoformat(data["ends_at"]) if data.get("ends_at") else None,
            fingerprint=data["fingerprint"],
            source=data["source"],
            target=target,
            generator_url=data.get("generator_url", ""),
            value=data.get("value"),
        )


class Severity(enum.StrEnum):
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"


class ActionKind(enum.StrEnum):
    """What a decision rule asks for (seed 8.1's Action column)."""

    ROLLBACK_NOW = "rollback_now"  # "Immediate rollback"
    ROLLBACK_WITHIN = "rollback_within"  # "Rollback within 15 min / 30 min / 2 hours"
    NOTIFY = "notify"  # threshold breached, tell people, change nothing
    PAUSE = "pause"  # stop the rollout where it is


class QuorumMode(enum.StrEnum):
    ALL_OF = "all_of"
    ANY_OF = "any_of"


class OnDeadline(enum.StrEnum):
    ESCALATE = "escalate"
    HOLD = "hold"
    PROCEED = "proceed"


@dataclass(frozen=True, slots=True)
class ApprovalRequirement:
    """Who must approve before the action runs: ``roles`` maps role → how many approvers."""

    roles: Mapping[str, int]
    mode: QuorumMode = QuorumMode.ALL_OF
    deadline_s: float | None = None
    on_deadline: OnDeadline = OnDeadline.ESCALATE
    forbid_author_approval: bool = False  # the deploy's author may not approve its rollback

    @property
    def required(self) -> bool:
        return bool(self.roles)

    def to_json(self) -> dict[str, Any]:
        return {
            "roles": dict(self.roles),
            "mode": self.mode.value,
            "deadline_s": self.deadline_s,
            "on_deadline": self.on_deadline.value,
            **({"forbid_author_approval": True} if self.forbid_author_approval else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApprovalRequirement:
        return cls(
            roles=MappingProxyType(dict(data.get("roles", {}))),
            mode=QuorumMode(data.get("mode", "all_of")),
            deadline_s=data.get("deadline_s"),
            on_deadline=OnDeadline(data.get("on_deadline", "escalate")),
            forbid_author_approval=bool(data.get("forbid_author_approval", False)),
        )


NO_APPROVAL = ApprovalRequirement(roles=MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rules concluded for one alert: the decision record's core."""

    rule: str
    severity: Severity
    action: ActionKind
    targets: tuple[Target, ...]
    approval: ApprovalRequirement = NO_APPROVAL
    act_within_s: float | None = None  # "rollback within N": the action's own deadline
    rollback_time_objective_s: float | None = None  # "Rollback Time" column: mitigation objective
    irreversible: bool = False  # guard tripped: never act without the named approvers
    to_revision: int | None = None  # correlated deploy's predecessor, when known
    channels: tuple[str, ...] = ()
    reason: str = ""
    measured: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    deploy: DeployEvent | None = None
    verify: VerifySpec | None = None  # how to tell the rollback worked (seed section 7)
    shadow: bool = False  # mode: shadow (the rule's, or the namespace's override): decide and dry-run, never write
    # Forced rollback of a stuck OrderedReady StatefulSet (the rule's ``forced_rollback.after``): None, never.
    forced_rollback_after_s: float | None = None

    @property
    def group_key(self) -> str:
        """Alerts for the same rule and targets join one incident."""
        return f"{self.rule}|{','.join(sorted(str(t) for t in self.targets))}"

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "action": self.action.value,
            "targets": [str(t) for t in self.targets],
            "approval": self.approval.to_json(),
            "act_within_s": self.act_within_s,
            "rollback_time_objective_s": self.rollback_time_objective_s,
            "irreversible": self.irreversible,
            "to_revision": self.to_revision,
            "channels": list(self.channels),
            "reason": self.reason,
            "measured": dict(self.measured),
            "deploy": self.deploy.to_json() if self.deploy else None,
            "verify": self.verify.to_json() if self.verify else None,
            **({"shadow": True} if self.shadow else {}),
            **({"forced_rollback": {"after_s": self.forced_rollback_after_s}} if self.forced_rollback_after_s else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Decision:
        dep = data.get("deploy")
        return cls(
            rule=data["rule"],
            severity=Severity(data["severity"]),
            action=ActionKind(data["action"]),
            targets=tuple(Target.parse(t) for t in data["targets"]),
            approval=ApprovalRequirement.from_json(data.get("approval", {})),
            act_within_s=data.get("act_within_s"),
            rollback_time_objective_s=data.get("rollback_time_objective_s"),
            irreversible=bool(data.get("irreversible", False)),
            to_revision=data.get("to_revision"),
            channels=tuple(data.get("channels", ())),
            reason=data.get("reason", ""),
            measured=MappingProxyType(dict(data.get("measured", {}))),
            deploy=DeployEvent.from_json(dep) if dep else None,
            verify=VerifySpec.from_json(data["verify"]) if data.get("verify") else None,
            shadow=bool(data.get("shadow", False)),
            forced_rollback_after_s=(data.get("forced_rollback") or {}).get("after_s"),
        )


# --- contracts between stages -------------------------------------------------------------


class Comparator(enum.StrEnum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    EQ = "=="
    NE = "!="

    def holds(self, value: float, threshold: float) -> bool:
        return {
            Comparator.GT: value > threshold,
            Comparator.GE: value >= threshold,
            Comparator.LT: value < threshold,
            Comparator.LE: value <= threshold,
            Comparator.EQ: value == threshold,
            Comparator.NE: value != threshold,
        }[self]


@dataclass(frozen=True, slots=True)
class ThresholdSpec:
    """A threshold rule as the poller and the exporter need it (seed 4.1's rows)."""

    name: str
    expr: str
    comparator: Comparator
    threshold: float
    for_s: float
    severity: Severity
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    channels: tuple[str, ...] = ()
    evaluated_by: str = "prometheus"  # prometheus (exported rule) | rollbackd (the poller)


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One post-rollback check of seed section 7.1: URL, expected status and body text, timeout."""

    url: str
    expect_status: int = 200
    expect_body: str = ""
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class VerifySpec:
    """How to tell that a rollback worked: health URLs answer and the PromQL is back under threshold."""

    health: tuple[HealthCheck, ...] = ()
    promql: str | None = None
    comparator: Comparator = Comparator.LT
    threshold: float | None = None
    within_s: float = 120.0

    def to_json(self) -> dict[str, Any]:
        return {
            "health": [
                {"url": h.url, "expect_status": h.expect_status, "expect_body": h.expect_body, "timeout_s": h.timeout_s}
                for h in self.health
            ],
            "promql": self.promql,
            "comparator": self.comparator.value,
            "threshold": self.threshold,
            "within_s": self.within_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VerifySpec:
        return cls(
            health=tuple(HealthCheck(**h) for h in data.get("health", ())),
            promql=data.get("promql"),
            comparator=Comparator(data.get("comparator", "<")),
            threshold=data.get("threshold"),
            within_s=float(data.get("within_s", 120.0)),
        )


@dataclass(frozen=True, slots=True)
class RollbackRequest:
    """What incidents ask of actions: roll these targets back, once, for this incident."""

    incident_id: str
    targets: tuple[Target, ...]
    reason: str
    automatic: bool = True
    to_revision: int | None = None
    dry_run: bool | None = None  # None: the executor's configured mode
    verify: VerifySpec | None = None
    opened_at: datetime | None = None  # the incident's opening (its first alert's arrival), for the latency metric
    # After this long with the StatefulSet's pod still not Ready on the bad revision, delete that pod
    # (``actions.forced``); None: never (the default: it needs the rule's permission).
    forced_rollback_after_s: float | None = None

    def idempotency_key(self, target: Target) -> str:
        return f"{self.incident_id}:{target}"


class TargetResult(enum.StrEnum):
    ROLLED_BACK = "rolled_back"
    ALREADY_DONE = "already_done"  # a previous attempt for the same intent had applied it
    DRY_RUN = "dry_run"
    REFUSED = "refused"  # budget, loop breaker, GitOps, no previous revision
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"  # this replica lost the Lease before the write; the new leader carries on


@dataclass(frozen=True, slots=True)
class TargetOutcome:
    target: Target
    result: TargetResult
    from_revision: int | None = None
    to_revision: int | None = None
    detail: str = ""
    # The forced rollback of a stuck StatefulSet, said where people read the result (also in ``detail``):
    # the pod deleted, or the stuck pod left alone for want of the permission (``actions.forced``).
    forced: str = ""


@dataclass(frozen=True, slots=True)
class RollbackOutcome:
    """What actions report back: one result per target, and whether verification passed."""

    targets: tuple[TargetOutcome, ...]
    verified: bool | None = None  # None: no verification configured or not reached
    verify_detail: str = ""

    @property
    def ok(self) -> bool:
        good = {TargetResult.ROLLED_BACK, TargetResult.ALREADY_DONE, TargetResult.DRY_RUN}
        return all(t.result in good for t in self.targets) and self.verified is not False


class NotificationKind(enum.StrEnum):
    OPENED = "opened"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    ACKNOWLEDGED = "acknowledged"
    ROLLING_BACK = "rolling_back"
    VERIFYING = "verifying"
    RESOLVED = "resolved"
    FAILED = "failed"
    ESCALATED = "escalated"
    EXPIRED = "expired"
    OBJECTIVE_BREACHED = "objective_breached"
    NO_DATA = "no_data"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    """Something responders must hear about; written to the outbox with the change that caused it.

    ``incident`` is the incident's decision record as JSON (state, decision, alerts, approvals,
    acks, actions), so a notifier renders from it alone. It never contains approval codes.
    """

    incident_id: str
    kind: NotificationKind
    severity: Severity
    summary: str
    incident: Mapping[str, Any]
    channels: tuple[str, ...] = ()
