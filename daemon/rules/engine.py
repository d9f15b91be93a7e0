"""Evaluation: (alert, deployment history) → decisions. Pure: no I/O, no clock, no state.

Decision rules are tried in file order among the index's candidates; the first
match wins unless it says ``continue: true``. A threshold rule's own alert
that no decision rule claims becomes a notify decision to its channels
(seed 4.1: a breach is announced, nothing is rolled back).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType

from daemon.deploys import DeployEvent, DeployHistory, DeployKind
from daemon.model import NO_APPROVAL, ActionKind, Alert, AlertStatus, Decision, Target, VerifySpec
from daemon.rules.cel import Activation, activation
from daemon.rules.compiled import CompiledDecision, CompiledThreshold, Guard, merge_guard
from daemon.rules.index import RuleIndex

_ROLLBACKS = frozenset({ActionKind.ROLLBACK_NOW, ActionKind.ROLLBACK_WITHIN})


@dataclass(frozen=True, slots=True)
class EngineTables:
    """What evaluation needs from a rule set."""

    index: RuleIndex
    thresholds: Mapping[str, CompiledThreshold]
    routing: Mapping[str, tuple[str, ...]]
    guard: Guard | None
    verify: Callable[[str, tuple[Target, ...]], VerifySpec | None]  # a decision's verification, by rule name


def evaluate(tables: EngineTables, alert: Alert, history: DeployHistory) -> list[Decision]:
    """Every decision the rules reach for ``alert``; a resolved alert decides nothing."""
    if alert.status is AlertStatus.RESOLVED:
        return []
    labels = {**alert.labels, "alertname": alert.name}
    decisions: list[Decision] = []
    # One activation per (alert, correlated deploy), shared by every condition tried on them.
    activations: dict[str | None, Activation] = {}
    for rule in tables.index.candidates(labels):
        if not all(m.matches(labels) for m in rule.matchers):
            continue
        deploy = _correlate(rule, alert, history)
        if rule.correlate_required and deploy is None:
            continue
        key = deploy.event_id if deploy else None
        if key not in activations and (rule.when is not None or tables.guard is not None):
            activations[key] = activation(alert, deploy)
        if rule.when is not None and not rule.when.holds(activations[key], rule=rule.name):
            continue
        decisions.append(_decide(tables, rule, alert, deploy=deploy, history=history, act=activations.get(key)))
        if not rule.continue_:
            break
    if not decisions:
        fallback = _threshold_notice(tables, alert, labels)
        if fallback is not None:
            decisions.append(fallback)
    return decisions


def _correlate(rule: CompiledDecision, alert: Alert, history: DeployHistory) -> DeployEvent | None:
    """The latest deployment (not one of our rollbacks) of the alert's target within the window."""
    if rule.correlate_within_s is None:
        return None
    earliest = alert.starts_at - timedelta(seconds=rule.correlate_within_s)
    target = alert.target  # decided at the edge, as the history was read for it
    service = alert.labels.get("service")
    fixed = set(rule.targets or ())
    for ev in history.events:  # newest first
        if ev.at > alert.starts_at or ev.kind is DeployKind.ROLLED_BACK:
            continue
        if ev.at < earliest:
            break
        if target is not None:
            hit = ev.target == target
        elif service is not None:
            hit = ev.service == service
        else:
            hit = ev.target in fixed
        if hit:
            return ev
    return None


def _previous_revision(deploy: DeployEvent, history: DeployHistory) -> int | None:
    """The revision that ran before ``deploy``: the one a rollback should return to."""
    seen = False
    for ev in history.events:
        if ev is deploy or ev.event_id == deploy.event_id:
            seen = True
            continue
        if (
            seen
            and ev.target == deploy.target
            and ev.kind is DeployKind.SUCCEEDED
            and ev.revision is not None
            and ev.revision != deploy.revision
        ):
            return ev.revision
    return None


def _targets(rule: CompiledDecision, alert: Alert, deploy: DeployEvent | None) -> tuple[Target, ...]:
    if rule.targets is not None:
        return rule.targets
    if rule.target_from == "deploy" and deploy is not None:
        return (deploy.target,)
    if alert.target is not None:
        return (alert.target,)
    return (deploy.target,) if deploy is not None else ()


def _decide(
    tables: EngineTables,
    rule: CompiledDecision,
    alert: Alert,
    *,
    deploy: DeployEvent | None,
    history: DeployHistory,
    act: Activation | None,
) -> Decision:
    approval = rule.approval
    irreversible = False
    if rule.action in _ROLLBACKS and tables.guard is not None:
        tripped = rule.irreversible or (act is not None and tables.guard.when.holds(act, rule=rule.name))
        if tripped:
            irreversible = True
            approval = merge_guard(rule.approval, tables.guard.approval)
    targets = _targets(rule, alert, deploy)
    return Decision(
        rule=rule.name,
        severity=rule.severity,
        action=rule.action,
        targets=targets,
        approval=approval,
        act_within_s=rule.within_s,
        rollback_time_objective_s=rule.objective_s,
        irreversible=irreversible,
        to_revision=_previous_revision(deploy, history) if deploy is not None else None,
        channels=rule.channels or tables.routing.get(rule.severity.value, ()),
        reason=_reason(rule.description or rule.name, alert, deploy, irreversible),
        measured=_measured(alert),
        deploy=deploy,
        verify=tables.verify(rule.name, targets),
        shadow=rule.shadow,
        forced_rollback_after_s=rule.forced_rollback_after_s,
    )


def _threshold_notice(tables: EngineTables, alert: Alert, labels: Mapping[str, str]) -> Decision | None:
    th = tables.thresholds.get(labels.get("rollbackd_rule") or alert.name)
    if th is None:
        return None
    spec = th.spec
    targets = (alert.target,) if alert.target is not None else ()
    return Decision(
        rule=spec.name,
        severity=spec.severity,
        action=ActionKind.NOTIFY,
        targets=targets,
        approval=NO_APPROVAL,
        channels=spec.channels or tables.routing.get(spec.severity.value, ()),
        reason=_reason(f"{th.component} {th.metric} {spec.comparator.value} {spec.threshold:g}", alert, None, False),
        measured=_measured(alert),
        verify=tables.verify(spec.name, targets),
    )


def _measured(alert: Alert) -> Mapping[str, float]:
    return MappingProxyType({"value": alert.value} if alert.value is not None else {})


def _reason(what: str, alert: Alert, deploy: DeployEvent | None, irreversible: bool) -> str:
    text = f"{what}: alert {alert.name}"
    if alert.value is not None:
        text += f" at {alert.value:g}"
    if deploy is not None:
        text += (
            f"; deploy {deploy.version or deploy.image or deploy.event_id} of {deploy.target} at {deploy.at:%H:%M:%S}"
        )
        if deploy.migration:
            text += " (ran a migration)"
    if irreversible:
        text += "; irreversibility guard: needs the named approvers"
    return text
