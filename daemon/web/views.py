"""What the incident pages show, computed from the typed records: pure functions, no I/O, no HTML.

``routes`` reads an ``IncidentRecord`` (and the rule set, and the outbox's
deliveries) and hands these values to the templates, which only lay them out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, urlsplit

from daemon.config import WebSettings
from daemon.incidents.record import IncidentRecord
from daemon.model import OnDeadline, Target
from daemon.redact import redact
from daemon.rules.ruleset import RuleSet

# The timers whose deadline is "what happens next", most pressing first.
_DEADLINES = ("approval_deadline", "act_deadline", "escalation", "objective")


def age(now: datetime, since: datetime) -> str:
    """``45s``, ``12m``, ``3h 05m``, ``2d 4h``: how long ago, at a glance."""
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours < 1:
        return f"{minutes}m"
    if days < 1:
        return f"{hours}h {minutes % 60:02d}m"
    return f"{days}d {hours % 24}h"


def clock_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def waiting(record: IncidentRecord) -> str:
    """``1x CTO, 1x Data Lead`` while the quorum is short; empty when nothing is missing."""
    if not record.open:
        return ""
    return ", ".join(f"{n}x {role}" for role, n in record.missing_roles.items() if n > 0)


def namespaces(record: IncidentRecord) -> set[str]:
    return {t.namespace for t in record.decision.targets}


@dataclass(frozen=True, slots=True)
class Filters:
    """The list's filters, from the query string; empty values mean "any"."""

    state: str = ""
    severity: str = ""
    namespace: str = ""

    def keep(self, record: IncidentRecord) -> bool:
        return (
            (not self.state or record.state.value == self.state)
            and (not self.severity or record.severity.value == self.severity)
            and (not self.namespace or self.namespace in namespaces(record))
        )


def ordered(records: Iterable[IncidentRecord], filters: Filters) -> list[IncidentRecord]:
    """Open incidents first, each group newest first."""
    kept = [r for r in records if filters.keep(r)]
    kept.sort(key=lambda r: r.opened_at, reverse=True)
    kept.sort(key=lambda r: not r.open)
    return kept


@dataclass(frozen=True, slots=True)
class NextStep:
    text: str
    due_at: datetime | None = None


def next_step(record: IncidentRecord, now: datetime) -> NextStep:
    """What happens next, and when: "proceeds automatically at 03:14 unless rejected"."""
    if not record.open:
        return NextStep(f"closed {clock_time(record.closed_at)}" if record.closed_at else "closed")
    pending = {t.kind: t for t in record.timers if t.status == "pending"}
    timer = next((pending[k] for k in _DEADLINES if k in pending), None)
    approval = record.decision.approval
    if record.awaiting_approval:
        if timer is None:
            return NextStep(f"waiting for approval ({waiting(record)}); no deadline")
        at = timer.due_at.strftime("%H:%M:%S UTC")
        outcome = {
            OnDeadline.PROCEED: f"proceeds automatically at {at} unless rejected",
            OnDeadline.ESCALATE: f"escalates at {at} unless approved or rejected",
            OnDeadline.HOLD: f"holds at {at}: nothing runs without the approvals",
        }[approval.on_deadline]
        return NextStep(f"waiting for {waiting(record)}; {outcome}", timer.due_at)
    if timer is not None:
        return NextStep(f"{timer.kind.replace('_', ' ')} at {timer.due_at.strftime('%H:%M:%S UTC')}", timer.due_at)
    return NextStep(f"{record.state.value.replace('_', ' ')}")


@dataclass(frozen=True, slots=True)
class RoleProgress:
    role: str
    needed: int
    approvers: tuple[str, ...]

    @property
    def met(self) -> bool:
        return len(self.approvers) >= self.needed


def progress(record: IncidentRecord) -> list[RoleProgress]:
    """Per role of the quorum: how many it needs and who has approved for it."""
    roles: Mapping[str, int] = record.decision.approval.roles
    approved = record.verdicts("approve")
    return [RoleProgress(role, n, tuple(a.approver for a in approved if a.role == role)) for role, n in roles.items()]


def roles_to_offer(record: IncidentRecord, approver_roles: Iterable[str]) -> list[str]:
    """The roles the approval form offers: those the incident needs that the approver holds."""
    held = set(approver_roles)
    return [role for role in record.decision.approval.roles if role in held]


def safe_url(url: str) -> str | None:
    """``url`` if it is http(s) (an alert's generator URL is the sender's text: no ``javascript:``)."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


@dataclass(frozen=True, slots=True)
class WorkloadLink:
    target: str
    url: str | None
    command: str


def workload_links(targets: Sequence[Target], web: WebSettings) -> list[WorkloadLink]:
    """A console link per target when ``web.kubernetes_url`` is set, and always the kubectl command."""
    links = []
    for t in targets:
        kind = str(getattr(t, "kind", "deployment"))
        url = None
        if web.kubernetes_url:
            url = safe_url(
                web.kubernetes_url.format(namespace=quote(t.namespace), kind=quote(kind), name=quote(t.name))
            )
        links.append(WorkloadLink(str(t), url, f"kubectl -n {t.namespace} get {kind}/{t.name}"))
    return links


@dataclass(frozen=True, slots=True)
class RuleFacts:
    """The rule behind a decision as the running rule set has it (None fields: not in the set any more)."""

    seed: str = ""
    description: str = ""
    threshold: str = ""  # the alert's threshold rule: "error_rate > 0.01"
    condition: str = ""  # the decision rule's own ``when``: "value > 0.05"


def rule_facts(rules: RuleSet | None, name: str) -> RuleFacts:
    rule = rules.decision_rule(name) if rules is not None else None
    if rule is None:
        return RuleFacts()
    threshold = ""
    th = rules.threshold(rule.threshold) if rules is not None and rule.threshold else None
    if th is not None:
        threshold = f"{th.spec.expr.strip()} {th.spec.comparator.value} {th.spec.threshold:g}"
    return RuleFacts(rule.seed, rule.description, threshold, rule.when.source.strip() if rule.when else "")


def detail_text(detail: Mapping[str, object]) -> str:
    """A timeline entry's detail as ``key=value`` pairs, secrets masked (escaped by the template, like all)."""
    return ", ".join(f"{k}={v}" for k, v in redact(dict(detail)).items())


def within(delta_s: float | None) -> str:
    if delta_s is None:
        return ""
    return str(timedelta(seconds=int(delta_s)))
