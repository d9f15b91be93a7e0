"""The rule file format, ``apiVersion: rollbackd/v1``, as pydantic models.

This is the edge of the rules stage: ``loader`` parses YAML into these models
(unknown keys are errors, every field is checked), ``ruleset`` compiles them
into the plain values the engine evaluates. ``docs/rules.md`` documents every
field shown here.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from daemon.model import ActionKind, Comparator, OnDeadline, Severity
from daemon.rules.durations import Duration

API_VERSION = "rollbackd/v1"
THRESHOLD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DECISION_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
ROLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9 _.-]*$")


def _role(value: str) -> str:
    if not ROLE_NAME.match(value):
        raise ValueError("expected a role name of letters, digits, spaces, '_', '.', '-'")
    return value


RoleName = Annotated[str, AfterValidator(_role)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ChannelDef(_Strict):
    """Where a notification goes: a Slack channel, a PagerDuty service, or both."""

    slack: str | None = Field(None, description="Slack channel, e.g. '#incidents'.")
    pagerduty: str | None = Field(None, description="PagerDuty service (routing key name).")
    description: str = ""

    @model_validator(mode="after")
    def _one_sink(self) -> ChannelDef:
        if not self.slack and not self.pagerduty:
            raise ValueError("a channel needs 'slack' or 'pagerduty' (or both)")
        return self


RoleCounts = dict[str, Annotated[int, Field(ge=1, le=20)]] | list[str]


class ApprovalDef(_Strict):
    """Who must approve: ``all_of`` (every role) or ``any_of`` (one role), with counts."""

    all_of: RoleCounts | None = None
    any_of: RoleCounts | None = None
    deadline: Duration | None = None
    on_deadline: OnDeadline = OnDeadline.ESCALATE
    forbid_author_approval: bool = Field(
        False, description="An approver may not approve the rollback of a deploy they authored (they may reject)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ApprovalDef:
        if (self.all_of is None) == (self.any_of is None):
            raise ValueError("give exactly one of 'all_of' or 'any_of'")
        if not (self.all_of or self.any_of):
            raise ValueError("name at least one role")
        if self.on_deadline is not OnDeadline.ESCALATE and self.deadline is None:
            raise ValueError(f"on_deadline '{self.on_deadline.value}' needs a 'deadline'")
        return self

    def role_counts(self) -> dict[str, int]:
        roles = self.all_of if self.all_of is not None else self.any_of
        if isinstance(roles, list):
            return dict.fromkeys(roles, 1)
        return dict(roles or {})


class HealthCheckDef(_Strict):
    """One HTTP health check (seed 7.1); ``{namespace}`` and ``{deployment}`` are filled in."""

    url: str = Field(pattern=r"^https?://")
    expect_status: int = Field(200, ge=100, le=599)
    expect_body: str = ""
    timeout: Duration = 30.0


class VerifyDef(_Strict):
    """How to verify a rollback: a PromQL expression back on the good side of a threshold."""

    promql: str | None = None
    comparator: Comparator = Comparator.LT
    threshold: float | None = None
    within: Duration = 120.0
    health: bool = Field(True, description="Also run the health checks of the targets (health_checks).")

    @model_validator(mode="after")
    def _pair(self) -> VerifyDef:
        if (self.promql is None) != (self.threshold is None):
            raise ValueError("'promql' and 'threshold' go together")
        return self


class ThresholdDef(_Strict):
    """A row of the alert-threshold matrix (seed 4.1)."""

    name: str = Field(description="Alert name; Prometheus alerts carry it as alertname.")
    seed: str = Field("", description="The seed row this rule implements, for traceability.")
    component: str
    metric: str
    expr: str = Field(min_length=1, description="PromQL producing the measured value.")
    comparator: Comparator
    threshold: float
    for_: Duration = Field(0.0, alias="for")
    severity: Severity
    channels: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    evaluated_by: Literal["prometheus", "rollbackd"] = "prometheus"
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not THRESHOLD_NAME.match(v):
            raise ValueError("expected an alert name like ApplicationErrorRate (letters, digits, _)")
        return v


class CorrelateDef(_Strict):
    """Link the alert to the latest deployment of its target within ``within`` before it started."""

    within: Duration
    required: bool = False


FORCED_AFTER_DEFAULT_S = 180.0
FORCED_AFTER_MAX_S = 1800.0


class ForcedRollbackDef(_Strict):
    """Allow the forced rollback of a stuck StatefulSet (``actions.forced``; kubernetes#67250).

    After the undo, when the pod the OrderedReady controller waits for is still not Ready on
    the bad revision ``after`` this long, rollbackd deletes that one pod so the controller
    recreates it on the restored revision.
    """

    after: Duration = Field(FORCED_AFTER_DEFAULT_S, description="How long the stuck pod may stay not Ready first.")

    @field_validator("after")
    @classmethod
    def _bounded(cls, v: float) -> float:
        if not 1.0 <= v <= FORCED_AFTER_MAX_S:
            raise ValueError("expected a wait from 1s to 30m")
        return v


class DecisionDef(_Strict):
    """A row of the rollback-decision matrix (seed 8.1)."""

    name: str
    seed: str = ""
    description: str = ""
    match: list[str] = Field(min_length=1, description='Alertmanager matchers, e.g. alertname="ServiceDown".')
    when: str | None = Field(None, description="CEL over alert, labels, value and deploy.")
    severity: Severity
    action: ActionKind
    within: Duration | None = Field(None, description="Deadline of rollback_within.")
    approval: ApprovalDef | None = None
    rollback_time_objective: Duration | None = None
    irreversible: bool = Field(False, description="Always needs the irreversibility guard's approvers.")
    correlate: CorrelateDef | None = None
    targets: list[str] | None = Field(None, description="Fixed namespace/name targets.")
    target_from: Literal["labels", "deploy"] = "labels"
    channels: list[str] | None = None
    verify: VerifyDef | None = None
    forced_rollback: ForcedRollbackDef | None = Field(
        None, description="Delete a StatefulSet's pod left stuck on the bad revision (OrderedReady); off by default."
    )
    continue_: bool = Field(False, alias="continue", description="Keep evaluating later rules after a match.")
    mode: Literal["enforce", "shadow"] = Field(
        "enforce",
        description="shadow: decide, notify (labelled SHADOW) and dry-run the undo on the API server; never write.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DECISION_NAME.match(v):
            raise ValueError("expected a lower-case name like error-rate-above-5-percent")
        return v

    @model_validator(mode="after")
    def _action_fields(self) -> DecisionDef:
        if self.action is ActionKind.ROLLBACK_WITHIN and self.within is None:
            raise ValueError("action rollback_within needs 'within' (e.g. within: 15m)")
        if self.action is not ActionKind.ROLLBACK_WITHIN and self.within is not None:
            raise ValueError(f"'within' applies to rollback_within only, not {self.action.value}")
        if self.target_from == "deploy" and self.correlate is None:
            raise ValueError("target_from: deploy needs a 'correlate' block")
        if self.targets is not None and not self.targets:
            raise ValueError("'targets' must name at least one namespace/name")
        rollback = self.action in (ActionKind.ROLLBACK_NOW, ActionKind.ROLLBACK_WITHIN)
        if self.forced_rollback is not None and not rollback:
            raise ValueError(f"'forced_rollback' applies to rollbacks only, not {self.action.value}")
        return self


class GuardDef(_Strict):
    """The irreversibility guard: when it trips, a rollback waits for these approvers."""

    when: str = Field(description="CEL; e.g. deploy != null && deploy.migration")
    approval: ApprovalDef
    description: str = ""

    @model_validator(mode="after")
    def _never_proceed(self) -> GuardDef:
        if self.approval.on_deadline is OnDeadline.PROCEED:
            raise ValueError("the guard's on_deadline cannot be 'proceed': it must never act without approvers")
        if self.approval.any_of is not None:
            raise ValueError("the guard names approvers who must all approve: use all_of")
        return self


class WeeklyDef(_Strict):
    """A weekly freeze: on these days, from ``from`` to ``to`` local time (``to`` before ``from``: past midnight)."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(min_length=1)
    start: str = Field(alias="from", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM local time.")
    end: str = Field(alias="to", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM local time.")


class DatesDef(_Strict):
    """A one-off freeze from one local date and time to another."""

    start: datetime = Field(alias="from", description="e.g. 2026-12-24T00:00 (local time of the window).")
    end: datetime = Field(alias="to")


class FreezeWindowDef(_Strict):
    """A scheduled window in which automated rollback is blocked or needs one more approval role."""

    name: str
    description: str = ""
    scope: str = Field("all", description="all, namespace:NS, deployment:NS/NAME or rule:NAME, as for pauses.")
    time_zone: str = Field("UTC", description="IANA time zone of the times, e.g. Europe/Berlin.")
    weekly: list[WeeklyDef] = Field(default_factory=list)
    dates: list[DatesDef] = Field(default_factory=list)
    effect: Literal["block", "require_approval"] = "block"
    approval_role: RoleName | None = Field(None, description="require_approval: the role that must approve too.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DECISION_NAME.match(v):
            raise ValueError("expected a lower-case name like weekend-freeze")
        return v

    @model_validator(mode="after")
    def _shape(self) -> FreezeWindowDef:
        if not self.weekly and not self.dates:
            raise ValueError("a freeze window needs 'weekly' times or 'dates' ranges (or both)")
        if (self.effect == "require_approval") != (self.approval_role is not None):
            raise ValueError("'approval_role' is given with effect require_approval, and only then")
        return self


class ManualRollbackDef(_Strict):
    """The break-glass manual rollback (seed 8.2): who must approve it and what it rolls back."""

    approval: ApprovalDef
    targets: list[str] = Field(default_factory=list)
    verify: VerifyDef | None = None
    forced_rollback: ForcedRollbackDef | None = Field(
        None, description="Break-glass rollbacks, approved by this quorum, may force a stuck StatefulSet's pod."
    )


class RuleFile(_Strict):
    """One YAML document. Every section is optional; files are merged in path order."""

    api_version: Literal["rollbackd/v1"] = Field(alias="apiVersion")
    roles: list[RoleName] = Field(default_factory=list)
    channels: dict[str, ChannelDef] = Field(default_factory=dict)
    routing: dict[Severity, list[str]] = Field(default_factory=dict)
    health_checks: dict[str, list[HealthCheckDef]] = Field(default_factory=dict)
    irreversible_guard: GuardDef | None = None
    manual_rollback: ManualRollbackDef | None = None
    thresholds: list[ThresholdDef] = Field(default_factory=list)
    decisions: list[DecisionDef] = Field(default_factory=list)
    freeze_windows: list[FreezeWindowDef] = Field(
        default_factory=list, description="When automated rollback is blocked or needs one more approval role."
    )
