"""Rules after validation: plain frozen values the index and the engine work on.

``build`` produces these from the validated schema models; nothing here reads
files or YAML, so evaluation stays a pure function of (alert, history).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from daemon.model import (
    ActionKind,
    ApprovalRequirement,
    Comparator,
    HealthCheck,
    OnDeadline,
    QuorumMode,
    Severity,
    Target,
    ThresholdSpec,
)
from daemon.rules.cel import CelCondition
from daemon.rules.matchers import Matcher
from daemon.rules.schema import ApprovalDef

_INVERSE = {
    Comparator.GT: Comparator.LE,
    Comparator.GE: Comparator.LT,
    Comparator.LT: Comparator.GE,
    Comparator.LE: Comparator.GT,
    Comparator.EQ: Comparator.NE,
    Comparator.NE: Comparator.EQ,
}


def inverse(comparator: Comparator) -> Comparator:
    """The comparator that holds when the breach is over (``>`` → ``<=``)."""
    return _INVERSE[comparator]


def approval_from(defn: ApprovalDef | None) -> ApprovalRequirement:
    if defn is None:
        return ApprovalRequirement(roles=MappingProxyType({}))
    return ApprovalRequirement(
        roles=MappingProxyType(defn.role_counts()),
        mode=QuorumMode.ALL_OF if defn.all_of is not None else QuorumMode.ANY_OF,
        deadline_s=defn.deadline,
        on_deadline=defn.on_deadline,
        forbid_author_approval=defn.forbid_author_approval,
    )


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a rule was written, for messages of ``rules check`` and ``rules test``."""

    file: str
    line: int
    column: int = 1
    path: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class CompiledThreshold:
    """A threshold rule: the spec the poller/exporter need, plus its seed row for traceability."""

    spec: ThresholdSpec
    component: str
    metric: str
    seed: str
    description: str
    origin: Origin


@dataclass(frozen=True, slots=True)
class CompiledVerify:
    promql: str | None
    comparator: Comparator
    threshold: float | None
    within_s: float
    health: bool


@dataclass(frozen=True, slots=True)
class CompiledDecision:
    """A decision rule ready to evaluate; ``order`` is its position across all files."""

    name: str
    order: int
    matchers: tuple[Matcher, ...]
    when: CelCondition | None
    severity: Severity
    action: ActionKind
    within_s: float | None
    approval: ApprovalRequirement
    objective_s: float | None
    irreversible: bool
    correlate_within_s: float | None
    correlate_required: bool
    targets: tuple[Target, ...] | None
    target_from: str
    channels: tuple[str, ...]
    verify: CompiledVerify | None
    continue_: bool
    description: str
    seed: str
    origin: Origin
    threshold: str | None  # the threshold rule whose alert this rule matches by name, if any
    shadow: bool = False  # mode: shadow — decide, notify (SHADOW) and dry-run; never write (control.guard)
    forced_rollback_after_s: float | None = None  # forced_rollback.after: None, never (actions.forced)


@dataclass(frozen=True, slots=True)
class Guard:
    """The irreversibility guard: a condition and the approvers it demands."""

    when: CelCondition
    approval: ApprovalRequirement
    description: str


@dataclass(frozen=True, slots=True)
class Channel:
    """A named notification channel: a Slack channel and/or a PagerDuty service."""

    name: str
    slack: str | None
    pagerduty: str | None


@dataclass(frozen=True, slots=True)
class ManualRollback:
    """Seed 8.2's break-glass rollback: its quorum, default targets and verification."""

    approval: ApprovalRequirement
    targets: tuple[Target, ...]
    verify: CompiledVerify | None
    forced_rollback_after_s: float | None = None  # forced_rollback.after of break-glass rollbacks


def merge_guard(rule: ApprovalRequirement, guard: ApprovalRequirement) -> ApprovalRequirement:
    """The guard's approvers, plus the rule's own when those are all required too.

    The guard never proceeds on its own: its deadline outcome wins over the rule's.
    """
    roles: dict[str, int] = dict(guard.roles)
    if rule.mode is QuorumMode.ALL_OF:
        for role, count in rule.roles.items():
            roles[role] = max(roles.get(role, 0), count)
    deadline = guard.deadline_s if guard.deadline_s is not None else rule.deadline_s
    on_deadline = guard.on_deadline if guard.on_deadline is not OnDeadline.PROCEED else OnDeadline.ESCALATE
    return ApprovalRequirement(MappingProxyType(roles), QuorumMode.ALL_OF, deadline, on_deadline)


def health_checks_for(checks: Mapping[str, tuple[HealthCheck, ...]], target: Target) -> tuple[HealthCheck, ...]:
    """The target's health checks with ``{namespace}`` and ``{deployment}`` filled in."""
    return tuple(
        HealthCheck(
            url=c.url.replace("{namespace}", target.namespace).replace("{deployment}", target.name),
            expect_status=c.expect_status,
            expect_body=c.expect_body,
            timeout_s=c.timeout_s,
        )
        for c in checks.get(target.name, ())
    )
