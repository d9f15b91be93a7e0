"""From validated documents to a ``RuleSet``, with the semantic checks a schema cannot make.

Second step of loading: names unique across files, channels and roles known,
matchers satisfiable, no rule shadowed by an earlier one, CEL that compiles.
Every problem is reported with the file, line and field it comes from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from daemon.model import ActionKind, HealthCheck, Target, ThresholdSpec
from daemon.rules import matchers
from daemon.rules.cel import CelCondition
from daemon.rules.compiled import (
    Channel,
    CompiledDecision,
    CompiledThreshold,
    CompiledVerify,
    Guard,
    ManualRollback,
    Origin,
    approval_from,
)
from daemon.rules.freeze import FreezeWindow, compile_window
from daemon.rules.index import RuleIndex
from daemon.rules.loader import LoadedDoc, Loc, RuleError, format_loc
from daemon.rules.ruleset import RuleSet
from daemon.rules.schema import ApprovalDef, DecisionDef, ThresholdDef, VerifyDef


@dataclass
class BuildResult:
    ruleset: RuleSet | None
    errors: list[RuleError] = field(default_factory=list)
    warnings: list[RuleError] = field(default_factory=list)


@dataclass
class _Ctx:
    docs: Sequence[LoadedDoc]
    errors: list[RuleError] = field(default_factory=list)
    warnings: list[RuleError] = field(default_factory=list)
    roles: set[str] = field(default_factory=set)
    channels: dict[str, Channel] = field(default_factory=dict)
    seen: dict[tuple[str, str], tuple[LoadedDoc, Loc]] = field(default_factory=dict)

    def err(self, doc: LoadedDoc, loc: Loc, message: str) -> None:
        self.errors.append(doc.error(loc, message))

    def unique(self, kind: str, name: str, doc: LoadedDoc, loc: Loc) -> bool:
        first = self.seen.get((kind, name))
        if first is not None:
            fdoc, floc = first
            line, _ = fdoc.where(floc)
            self.err(doc, loc, f"duplicate {kind} {name!r}; first defined at {fdoc.file}:{line}")
            return False
        self.seen[(kind, name)] = (doc, loc)
        return True

    def check_roles(self, doc: LoadedDoc, loc: Loc, approval: ApprovalDef | None) -> None:
        if approval is None:
            return
        key = "all_of" if approval.all_of is not None else "any_of"
        for role in approval.role_counts():
            if role not in self.roles:
                known = ", ".join(sorted(self.roles)) or "none declared"
                self.err(doc, (*loc, key), f"unknown role {role!r}; declared roles: {known}")

    def check_channels(self, doc: LoadedDoc, loc: Loc, names: Sequence[str]) -> None:
        for i, name in enumerate(names):
            if name not in self.channels:
                known = ", ".join(sorted(self.channels)) or "none declared"
                self.err(doc, (*loc, i), f"unknown channel {name!r}; declared channels: {known}")


def build(docs: Sequence[LoadedDoc]) -> BuildResult:
    """Compile every document into one rule set; ``ruleset`` is None if there are errors."""
    ctx = _Ctx(docs)
    for doc in docs:
        ctx.roles.update(doc.doc.roles)
        for name, ch in doc.doc.channels.items():
            if ctx.unique("channel", name, doc, ("channels", name)):
                ctx.channels[name] = Channel(name, ch.slack, ch.pagerduty)
    guard = _guard(ctx)
    manual = _manual(ctx)
    routing, health = _routing_and_health(ctx)
    thresholds = [t for doc in docs for i, d in enumerate(doc.doc.thresholds) if (t := _threshold(ctx, doc, i, d))]
    threshold_names = {t.spec.name for t in thresholds}
    decisions: list[CompiledDecision] = []
    for doc in docs:
        for i, d in enumerate(doc.doc.decisions):
            rule = _decision(
                ctx, doc, i, d, order=len(decisions), thresholds=threshold_names, has_guard=guard is not None
            )
            if rule is not None:
                decisions.append(rule)
    for origin, severity, channels in [(t.origin, t.spec.severity, t.spec.channels) for t in thresholds] + [
        (d.origin, d.severity, d.channels) for d in decisions
    ]:
        if not channels and severity.value not in routing:
            message = f"no channels: give 'channels' or routing for {severity.value}"
            ctx.errors.append(RuleError(origin.file, origin.line, origin.column, origin.path, message))
    _shadowed(ctx, decisions)
    windows = _freeze_windows(ctx)
    if ctx.errors:
        return BuildResult(None, ctx.errors, ctx.warnings)
    ruleset = RuleSet(
        thresholds=tuple(thresholds),
        decisions=tuple(decisions),
        channels=ctx.channels,
        routing=routing,
        roles=frozenset(ctx.roles),
        health_checks=health,
        guard=guard,
        manual_rollback=manual,
        files=tuple(dict.fromkeys(d.file for d in docs)),
        freeze_windows=tuple(windows),
    )
    return BuildResult(ruleset, [], ctx.warnings)


def _freeze_windows(ctx: _Ctx) -> list[FreezeWindow]:
    """Every file's freeze windows, compiled; each problem reported at its field."""
    windows = []
    for doc in ctx.docs:
        for i, d in enumerate(doc.doc.freeze_windows):
            loc: Loc = ("freeze_windows", i)
            unique = ctx.unique("freeze window", d.name, doc, (*loc, "name"))
            compiled = compile_window(d, frozenset(ctx.roles))
            if isinstance(compiled, list):
                for where, message in compiled:
                    ctx.err(doc, (*loc, *where), message)
            elif unique:
                windows.append(compiled)
    return windows


def _routing_and_health(ctx: _Ctx) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[HealthCheck, ...]]]:
    routing: dict[str, tuple[str, ...]] = {}
    health: dict[str, tuple[HealthCheck, ...]] = {}
    for doc in ctx.docs:
        for sev, names in doc.doc.routing.items():
            if ctx.unique("routing for", sev.value, doc, ("routing", sev.value)):
                ctx.check_channels(doc, ("routing", sev.value), names)
                routing[sev.value] = tuple(names)
        for dep, checks in doc.doc.health_checks.items():
            if ctx.unique("health checks for", dep, doc, ("health_checks", dep)):
                health[dep] = tuple(HealthCheck(c.url, c.expect_status, c.expect_body, c.timeout) for c in checks)
    return routing, health


def _cel(ctx: _Ctx, doc: LoadedDoc, loc: Loc, source: str) -> CelCondition | None:
    try:
        cond = CelCondition(source)
    except ValueError as exc:
        ctx.err(doc, loc, f"found {source!r}, {exc}")
        return None
    if cond.interpreted_because is not None:
        ctx.warnings.append(
            doc.error(loc, f"evaluated by the slower CEL interpreter: the compiler says {cond.interpreted_because}")
        )
    return cond


def _guard(ctx: _Ctx) -> Guard | None:
    guard = None
    for doc in ctx.docs:
        g = doc.doc.irreversible_guard
        if g is None or not ctx.unique("section", "irreversible_guard", doc, ("irreversible_guard",)):
            continue
        ctx.check_roles(doc, ("irreversible_guard", "approval"), g.approval)
        cond = _cel(ctx, doc, ("irreversible_guard", "when"), g.when)
        if cond is not None:
            guard = Guard(cond, approval_from(g.approval), g.description)
    return guard


def _targets(ctx: _Ctx, doc: LoadedDoc, loc: Loc, texts: Sequence[str]) -> tuple[Target, ...]:
    out = []
    for i, text in enumerate(texts):
        try:
            out.append(Target.parse_strict(text))
        except ValueError as exc:
            ctx.err(doc, (*loc, i), str(exc))
    return tuple(out)


def _verify(v: VerifyDef | None) -> CompiledVerify | None:
    if v is None:
        return None
    return CompiledVerify(v.promql, v.comparator, v.threshold, v.within, v.health)


def _manual(ctx: _Ctx) -> ManualRollback | None:
    manual = None
    for doc in ctx.docs:
        m = doc.doc.manual_rollback
        if m is None or not ctx.unique("section", "manual_rollback", doc, ("manual_rollback",)):
            continue
        ctx.check_roles(doc, ("manual_rollback", "approval"), m.approval)
        targets = _targets(ctx, doc, ("manual_rollback", "targets"), m.targets)
        forced = m.forced_rollback.after if m.forced_rollback else None
        manual = ManualRollback(approval_from(m.approval), targets, _verify(m.verify), forced)
    return manual


def _threshold(ctx: _Ctx, doc: LoadedDoc, i: int, d: ThresholdDef) -> CompiledThreshold | None:
    loc: Loc = ("thresholds", i)
    if not ctx.unique("rule", d.name, doc, (*loc, "name")):
        return None
    ctx.check_channels(doc, (*loc, "channels"), d.channels)
    reserved = {"alertname", "rollbackd_rule", "severity"} & set(d.labels)
    if reserved:
        ctx.err(doc, (*loc, "labels"), f"labels {sorted(reserved)} are set by rollbackd; remove them")
    spec = ThresholdSpec(
        name=d.name,
        expr=d.expr.strip(),
        comparator=d.comparator,
        threshold=d.threshold,
        for_s=d.for_,
        severity=d.severity,
        labels=MappingProxyType(dict(d.labels)),
        annotations=MappingProxyType(dict(d.annotations)),
        channels=tuple(d.channels),
        evaluated_by=d.evaluated_by,
    )
    origin = Origin(doc.file, *doc.where(loc), format_loc(loc))
    return CompiledThreshold(spec, d.component, d.metric, d.seed, d.description, origin)


def _decision(
    ctx: _Ctx, doc: LoadedDoc, i: int, d: DecisionDef, *, order: int, thresholds: set[str], has_guard: bool
) -> CompiledDecision | None:
    loc: Loc = ("decisions", i)
    ok = ctx.unique("rule", d.name, doc, (*loc, "name"))
    parsed = []
    for j, text in enumerate(d.match):
        try:
            parsed.append(matchers.parse(text))
        except ValueError as exc:
            ok = False
            ctx.err(doc, (*loc, "match", j), f"found {text!r}, {exc}")
    why = matchers.contradiction(parsed)
    if why:
        ok = False
        ctx.err(doc, (*loc, "match"), f"can never match: {why}")
    when = _cel(ctx, doc, (*loc, "when"), d.when) if d.when is not None else None
    ok = ok and (d.when is None or when is not None)
    ctx.check_roles(doc, (*loc, "approval"), d.approval)
    ctx.check_channels(doc, (*loc, "channels"), d.channels or ())
    targets = _targets(ctx, doc, (*loc, "targets"), d.targets) if d.targets is not None else None
    rollback = d.action in (ActionKind.ROLLBACK_NOW, ActionKind.ROLLBACK_WITHIN)
    if d.irreversible and not has_guard:
        ctx.err(doc, (*loc, "irreversible"), "irreversible: true needs an irreversible_guard section naming approvers")
    if d.irreversible and not rollback:
        ctx.err(doc, (*loc, "irreversible"), f"only rollbacks are irreversible, not {d.action.value}")
    if rollback and d.approval is None and not d.irreversible:
        ctx.warnings.append(doc.error((*loc, "approval"), "rolls back without anyone's approval"))
    if not ok:
        return None
    named = next((m.value for m in parsed if m.label == "alertname" and m.op is matchers.Op.EQ), None)
    return CompiledDecision(
        name=d.name,
        order=order,
        matchers=tuple(parsed),
        when=when,
        severity=d.severity,
        action=d.action,
        within_s=d.within,
        approval=approval_from(d.approval),
        objective_s=d.rollback_time_objective,
        irreversible=d.irreversible,
        correlate_within_s=d.correlate.within if d.correlate else None,
        correlate_required=bool(d.correlate and d.correlate.required),
        targets=targets,
        target_from=d.target_from,
        channels=tuple(d.channels or ()),
        verify=_verify(d.verify),
        continue_=d.continue_,
        description=d.description,
        seed=d.seed,
        origin=Origin(doc.file, *doc.where(loc), format_loc(loc)),
        threshold=named if named in thresholds else None,
        shadow=d.mode == "shadow",
        forced_rollback_after_s=d.forced_rollback.after if d.forced_rollback else None,
    )


def _shadowed(ctx: _Ctx, decisions: Sequence[CompiledDecision]) -> None:
    """A rule no alert can reach: an earlier, unconditional rule matches everything it matches."""
    index = RuleIndex(decisions)
    for rule in decisions:
        probe = {m.label: m.value for m in rule.matchers if m.op is matchers.Op.EQ}
        for earlier in index.candidates(probe):
            if earlier.order >= rule.order:
                break
            unconditional = earlier.when is None and not earlier.correlate_required and not earlier.continue_
            if unconditional and matchers.implies(earlier.matchers, rule.matchers):
                ctx.errors.append(
                    RuleError(
                        rule.origin.file,
                        rule.origin.line,
                        rule.origin.column,
                        f"{rule.origin.path}.match",
                        f"never reached: rule {earlier.name!r} ({earlier.origin}) matches every alert "
                        "this rule matches and stops there; reorder, narrow it, or set continue: true",
                    )
                )
                break
