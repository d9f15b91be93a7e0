"""What the incident pages compute from a record: next step, quorum progress, ordering, links, ages.

The records are the real incident path's (``tests.fakes.records``: a
checkout error-rate incident opened, acknowledged and approved by ada).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.config import WebSettings
from daemon.incidents.record import IncidentRecord
from daemon.model import NotificationKind, OnDeadline, Severity, Target
from daemon.rules.registry import load_ruleset
from daemon.web import views
from daemon.web.access import safe_next
from tests.fakes.records import Lifecycle, lifecycle

__all__ = ["lifecycle"]


def _record(lifecycle: Lifecycle, kind: NotificationKind) -> IncidentRecord:
    return IncidentRecord.from_json(lifecycle.record(kind))


def _on_deadline(record: IncidentRecord, on_deadline: OnDeadline) -> IncidentRecord:
    approval = replace(record.decision.approval, on_deadline=on_deadline)
    return replace(record, decision=replace(record.decision, approval=approval))


@pytest.mark.parametrize(
    ("on_deadline", "says"),
    [
        (OnDeadline.PROCEED, "proceeds automatically at {at} unless rejected"),
        (OnDeadline.ESCALATE, "escalates at {at} unless approved or rejected"),
        (OnDeadline.HOLD, "holds at {at}: nothing runs without the approvals"),
    ],
)
def test_what_happens_next_names_the_deadline_and_its_outcome(
    lifecycle: Lifecycle, on_deadline: OnDeadline, says: str
) -> None:
    record = _on_deadline(_record(lifecycle, NotificationKind.AWAITING_APPROVAL), on_deadline)
    deadline = record.timer("approval_deadline")
    assert deadline is not None
    step = views.next_step(record, record.opened_at)
    assert step.due_at == deadline.due_at
    assert step.text == "waiting for 1x engineering_lead; " + says.format(at=deadline.due_at.strftime("%H:%M:%S UTC"))


def test_a_closed_incident_says_when_it_closed_and_waits_for_nobody(lifecycle: Lifecycle) -> None:
    record = _record(lifecycle, NotificationKind.RESOLVED)
    assert record.closed_at is not None
    assert views.next_step(record, record.closed_at).text == f"closed {views.clock_time(record.closed_at)}"
    assert views.waiting(record) == ""


def test_quorum_progress_per_role(lifecycle: Lifecycle) -> None:
    waiting = views.progress(_record(lifecycle, NotificationKind.AWAITING_APPROVAL))
    assert [(p.role, p.needed, p.approvers, p.met) for p in waiting] == [("engineering_lead", 1, (), False)]
    approved = views.progress(_record(lifecycle, NotificationKind.RESOLVED))
    assert [(p.role, p.approvers, p.met) for p in approved] == [("engineering_lead", ("ada",), True)]
    record = _record(lifecycle, NotificationKind.AWAITING_APPROVAL)
    assert views.roles_to_offer(record, ["engineering_lead", "cto"]) == ["engineering_lead"]
    assert views.roles_to_offer(record, ["cto"]) == []


def test_open_incidents_come_first_and_filters_apply(lifecycle: Lifecycle) -> None:
    closed = _record(lifecycle, NotificationKind.RESOLVED)
    base = _record(lifecycle, NotificationKind.AWAITING_APPROVAL)
    older_open = replace(base, id="older", opened_at=base.opened_at - timedelta(hours=1))
    newer_closed = replace(closed, id="newer-closed", opened_at=base.opened_at + timedelta(hours=1))
    other_ns = replace(base, id="other-ns", decision=replace(base.decision, targets=(Target("pay", "api"),)))
    p0 = replace(other_ns, id="p0", decision=replace(other_ns.decision, severity=Severity.P0))
    records = [newer_closed, older_open, base, other_ns, p0]
    # Open ones newest first (the older open one after the newer), the closed one last however new.
    expected = [base.id, "other-ns", "p0", "older", "newer-closed"]
    assert [r.id for r in views.ordered(records, views.Filters())] == expected
    assert [r.id for r in views.ordered(records, views.Filters(namespace="pay"))] == ["other-ns", "p0"]
    assert [r.id for r in views.ordered(records, views.Filters(severity="P0"))] == ["p0"]
    assert [r.id for r in views.ordered(records, views.Filters(state="resolved"))] == ["newer-closed"]


@pytest.mark.parametrize(
    ("url", "linked"),
    [
        ("http://prometheus.local/graph?g0.expr=up", True),
        ("HTTPS://prometheus.example/graph", True),
        ("javascript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("data:text/html,<script>alert(1)</script>", False),
        ("//evil.example/x", False),
        ("", False),
    ],
)
def test_only_http_urls_become_links(url: str, linked: bool) -> None:
    assert (views.safe_url(url) is not None) is linked


def test_workload_links_quote_the_names_into_the_console_url() -> None:
    web = WebSettings(kubernetes_url="https://console.example/k8s/ns/{namespace}/{kind}s/{name}")
    [link] = views.workload_links([Target("shop", "check out")], web)
    assert link.url == "https://console.example/k8s/ns/shop/deployments/check%20out"
    assert link.command == "kubectl -n shop get deployment/check out"
    [plain] = views.workload_links([Target("shop", "checkout")], WebSettings())
    assert plain.url is None


def test_ages_read_at_a_glance() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    ago = [timedelta(seconds=45), timedelta(minutes=12), timedelta(hours=3, minutes=5), timedelta(days=2, hours=4)]
    assert [views.age(now, now - d) for d in ago] == ["45s", "12m", "3h 05m", "2d 4h"]
    assert views.age(now, now + timedelta(seconds=5)) == "0s"  # a clock a little ahead is "now", not negative


def test_timeline_detail_masks_secrets() -> None:
    assert views.detail_text({"why": "quorum met", "token": "abc123"}) == "why=quorum met, token=[REDACTED]"


@pytest.mark.parametrize(
    ("asked", "goes_to"),
    [
        ("/incidents/0f25f92e9c73", "/incidents/0f25f92e9c73"),
        ("/incidents?state=open&severity=P0", "/incidents?state=open&severity=P0"),
        ("//evil.example/x", "/incidents"),
        ("/\t/evil.example", "/incidents"),
        ("/\n/evil.example", "/incidents"),
        ("/\\evil.example", "/incidents"),
        ("https://evil.example/", "/incidents"),
        ("javascript:alert(1)", "/incidents"),
        ("incidents", "/incidents"),
        ("", "/incidents"),
        (None, "/incidents"),
    ],
)
def test_after_sign_in_only_paths_of_this_site(asked: str | None, goes_to: str) -> None:
    assert safe_next(asked) == goes_to


def test_rule_facts_give_the_alert_s_threshold_and_the_rule_s_own_condition() -> None:
    rules = Path(__file__).resolve().parents[3] / "rules"
    ruleset, errors, _ = load_ruleset([rules / f for f in ("thresholds.yaml", "rollback-matrix.yaml", "routing.yaml")])
    assert errors == []
    facts = views.rule_facts(ruleset, "error-rate-above-5-percent")
    assert facts.seed.startswith("8.1 Error rate >5%")
    assert facts.threshold.endswith("/ sum by (namespace, deployment) (rate(http_requests_total[5m])) > 0.01")
    assert facts.condition == "value > 0.05"
    down = views.rule_facts(ruleset, "service-completely-down")
    replicas = "sum by (namespace, deployment) (kube_deployment_status_replicas_available) == 0"
    assert (down.threshold, down.condition) == (replicas, "")
    assert views.rule_facts(ruleset, "no-such-rule") == views.RuleFacts()
    assert views.rule_facts(None, "service-completely-down") == views.RuleFacts()
