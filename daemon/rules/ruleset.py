"""A loaded, validated rule set: what the rest of the daemon asks of the rules.

Immutable once built, so the registry can swap it atomically and a worker
holding the previous one finishes its evaluation undisturbed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

from daemon.deploys import DeployHistory
from daemon.model import (
    Alert,
    AlertStatus,
    ApprovalRequirement,
    Comparator,
    Decision,
    HealthCheck,
    Severity,
    Target,
    ThresholdSpec,
    VerifySpec,
)
from daemon.rules import engine
from daemon.rules.compiled import (
    Channel,
    CompiledDecision,
    CompiledThreshold,
    CompiledVerify,
    Guard,
    ManualRollback,
    health_checks_for,
    inverse,
)
from daemon.rules.freeze import FreezeWindow
from daemon.rules.index import RuleIndex

_VERIFIED_MAX = 10_000


class RuleSet:
    """Threshold rules, decision rules (indexed), routing, roles, guard and break-glass quorum."""

    def __init__(
        self,
        *,
        thresholds: tuple[CompiledThreshold, ...] = (),
        decisions: tuple[CompiledDecision, ...] = (),
        channels: Mapping[str, Channel] | None = None,
        routing: Mapping[str, tuple[str, ...]] | None = None,
        roles: frozenset[str] = frozenset(),
        health_checks: Mapping[str, tuple[HealthCheck, ...]] | None = None,
        guard: Guard | None = None,
        manual_rollback: ManualRollback | None = None,
        files: tuple[str, ...] = (),
        freeze_windows: tuple[FreezeWindow, ...] = (),
    ) -> None:
        self.freeze_windows = freeze_windows  # rules.freeze: asked at decision time and by the automation guard
        self.thresholds = thresholds
        self.decisions = decisions
        self.channels: Mapping[str, Channel] = MappingProxyType(dict(channels or {}))
        self.routing: Mapping[str, tuple[str, ...]] = MappingProxyType(dict(routing or {}))
        self.roles = roles
        self.health_checks: Mapping[str, tuple[HealthCheck, ...]] = MappingProxyType(dict(health_checks or {}))
        self.guard = guard
        self.files = files
        self._manual = manual_rollback
        self._thresholds_by_name = MappingProxyType({t.spec.name: t for t in thresholds})
        self._decisions_by_name = MappingProxyType({d.name: d for d in decisions})
        self._tables = engine.EngineTables(
            RuleIndex(decisions), self._thresholds_by_name, self.routing, guard, self._verify
        )
        self._correlating = any(d.correlate_within_s is not None for d in decisions)
        # A verification depends only on the rule and the targets: a storm on a few targets computes it once.
        self._verified: dict[tuple[str, tuple[Target, ...]], VerifySpec | None] = {}

    # --- evaluation -----------------------------------------------------------------------

    def evaluate(self, alert: Alert, history: DeployHistory) -> list[Decision]:
        """Decisions for ``alert`` given the recent deployments, each with its verification; pure."""
        return engine.evaluate(self._tables, alert, history)

    def needs_history(self, alert: Alert) -> bool:
        """Whether ``evaluate`` may read the deploy history for ``alert``; False lets callers skip reading it.

        True when a decision rule that matches the alert correlates with deployments. Conservative:
        an earlier matching rule might win first, and ``when`` conditions are not evaluated here.
        """
        return any(True for _ in self._correlating_rules(alert))

    def correlated_targets(self, alert: Alert) -> tuple[Target, ...]:
        """The fixed targets of the correlating rules that may match ``alert``, in rule order.

        Whose deploys an alert that names no workload (and no ``service``) is correlated with,
        so the caller reads their history too.
        """
        found: dict[Target, None] = {}
        for rule in self._correlating_rules(alert):
            found.update(dict.fromkeys(rule.targets or ()))
        return tuple(found)

    def _correlating_rules(self, alert: Alert) -> Iterator[CompiledDecision]:
        if not self._correlating or alert.status is AlertStatus.RESOLVED:
            return
        labels = {**alert.labels, "alertname": alert.name}
        for rule in self._tables.index.candidates(labels):
            if rule.correlate_within_s is not None and all(m.matches(labels) for m in rule.matchers):
                yield rule

    def verify_for(self, decision: Decision) -> VerifySpec | None:
        """How to verify a rollback made for ``decision``: the targets' health checks and a PromQL check."""
        return self._verify(decision.rule, decision.targets)

    def _verify(self, rule_name: str, targets: tuple[Target, ...]) -> VerifySpec | None:
        # The engine calls this while it builds each decision, so a decision is made once, complete.
        key = (rule_name, targets)
        if key in self._verified:
            return self._verified[key]
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()  # bounded: alerts may name any number of targets
        spec = self._verified[key] = self._compute_verify(rule_name, targets)
        return spec

    def _compute_verify(self, rule_name: str, targets: tuple[Target, ...]) -> VerifySpec | None:
        rule = self._decisions_by_name.get(rule_name)
        verify = rule.verify if rule is not None else None
        health: tuple[HealthCheck, ...] = ()
        if verify is None or verify.health:
            for target in targets:
                health += health_checks_for(self.health_checks, target)
        promql, comparator, threshold, within = self._promql_check(rule, verify)
        if not health and promql is None:
            return None
        return VerifySpec(health=health, promql=promql, comparator=comparator, threshold=threshold, within_s=within)

    def _promql_check(
        self, rule: CompiledDecision | None, verify: CompiledVerify | None
    ) -> tuple[str | None, Comparator, float | None, float]:
        within = verify.within_s if verify is not None else 120.0
        if verify is not None and verify.promql is not None:
            return verify.promql, verify.comparator, verify.threshold, within
        th = self._thresholds_by_name.get(rule.threshold) if rule is not None and rule.threshold else None
        if th is None:
            return None, Comparator.LT, None, within
        # Verified when the breach is over: the threshold's comparator, inverted.
        return th.spec.expr, inverse(th.spec.comparator), th.spec.threshold, within

    # --- what other stages read -------------------------------------------------------------

    @property
    def threshold_specs(self) -> tuple[ThresholdSpec, ...]:
        return tuple(t.spec for t in self.thresholds)

    @property
    def manual_rollback(self) -> ApprovalRequirement:
        """The break-glass quorum (seed 8.2); an empty requirement if no file defines one."""
        if self._manual is None:
            return ApprovalRequirement(roles=MappingProxyType({}))
        return self._manual.approval

    @property
    def manual_rollback_spec(self) -> ManualRollback | None:
        return self._manual

    def channels_for(self, severity: Severity | str) -> tuple[str, ...]:
        return self.routing.get(Severity(severity).value, ())

    def threshold(self, name: str) -> CompiledThreshold | None:
        return self._thresholds_by_name.get(name)

    def decision_rule(self, name: str) -> CompiledDecision | None:
        return self._decisions_by_name.get(name)

    @property
    def rule_count(self) -> int:
        return len(self.thresholds) + len(self.decisions)

    def summary(self) -> dict[str, int]:
        return {"thresholds": len(self.thresholds), "decisions": len(self.decisions), "files": len(self.files)}
