"""Automation control on the real cluster, through ``rollbackd run``: shadow, one attempt, Kubernetes Events.

One daemon on each store (``--store=both``) with the ``shadow`` rules, Slack pointed at the local Slack
server, the test cluster's kubeconfig. Deployments start at revision 2 (``:v2``, the bad one).

- A shadow rule produces the decision record (held by ``guard:shadow``, "would roll back … revision
  2 → 1"), SHADOW-labelled Slack messages and a server-side dry run, and the Deployment is unchanged:
  its ``resourceVersion`` does not move. The dry run reaches the API server: for a second Deployment a
  ValidatingAdmissionPolicy refuses dry-run updates, and the hold says the API server's refusal. Once
  the alert resolves, ``rollbackd shadow report --since 7d`` (and its API) counts one would-be rollback,
  resolved without it.
- ``LatencyProbe`` rolls the other Deployment back (revision 3); ``kubectl describe deployment`` shows
  the ``RollbackDecided`` and ``RolledBack`` Events with "revision 2 → 1 by rule probe-rollback-now,
  incident …" and the annotation naming the incident. The bad template is deployed again (revision 4):
  the second alert is not rolled back automatically; the incident is escalated by the one-attempt
  guard and the Deployment shows ``RollbackRefused``.

A freeze window blocks a rollback at a time inside it and not outside it (a fake clock for the guard),
with the real executor on the cluster: inside, held, dry-run and the Deployment unchanged; outside,
rolled back.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from daemon.actions.executor import RollbackExecutor
from daemon.cli import main
from daemon.clock import FakeClock, SystemClock
from daemon.config import KubernetesSettings
from daemon.control.guard import AutomationGuard, freeze_check
from daemon.control.pauses import Pauses
from daemon.incidents.service import IncidentService
from daemon.model import ActionKind, Alert, AlertStatus, Decision, Severity, Target
from daemon.rules.registry import load_ruleset
from daemon.store.db import Store
from daemon.store.tables import OutboxRow
from tests.daemon_process import ADMIN_TOKEN, INGEST_TOKEN, DaemonProcess
from tests.fakes.fixtures import SLACK_TOKEN, fake_slack  # noqa: F401 (a fixture)
from tests.fakes.slack_server import FakeSlack
from tests.fixtures import rules_file
from tests.kube_util import IMAGE, deploy_with_history, revision
from tests.stack.kube import KubeCluster
from tests.waiting import until as _until
from tests.webhooks import firing_alert, webhook_bodies

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

until = functools.partial(_until, every=0.2)  # the conditions run kubectl: a slower pace


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def fire(daemon: DaemonProcess, alertname: str, ns: str, name: str) -> dict[str, Any]:
    alert = firing_alert(alertname, ns, name, 0, uuid.uuid4().hex[:8])
    post(daemon, alert)
    return alert


def post(daemon: DaemonProcess, alert: dict[str, Any]) -> None:
    [body] = webhook_bodies([alert], random.Random(1), 1)
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    resp = httpx.post(f"{daemon.url}/webhooks/alertmanager", content=body, headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text


def resolve(daemon: DaemonProcess, alert: dict[str, Any]) -> None:
    post(daemon, alert | {"status": "resolved", "endsAt": datetime.now(UTC).isoformat().replace("+00:00", "Z")})


# Dry-run updates of a Deployment labelled so are refused by the API server's admission: the proof that
# a held rollback's dry run is checked there (a dry run that never left rollbackd could not meet it).
REFUSE_LABEL = "rollbackd.test/refuse-dry-run"
REFUSAL = "rollbackd.test: this Deployment refuses dry-run updates"


def refuse_dry_runs(kube: KubeCluster, ns: str) -> str:
    """A ValidatingAdmissionPolicy (and its binding) for ``ns``: its name, to delete afterwards."""
    name = f"refuse-dry-run-{ns}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["deployments"]}
            ]},
            "validations": [{
                "expression": f"!request.dryRun || !has(object.metadata.labels) || "
                              f"!('{REFUSE_LABEL}' in object.metadata.labels)",
                "message": REFUSAL,
            }],
        },
    }  # fmt: skip
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
        },
    }  # fmt: skip
    for obj in (policy, binding):
        kube.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
    return name


def dry_run_refused(kube: KubeCluster, ns: str, name: str) -> bool:
    """Whether the policy is in force: ``kubectl``'s own server-side dry run of a change is refused."""
    patch = '{"spec":{"template":{"metadata":{"labels":{"probe":"x"}}}}}'
    out = kube.kubectl("-n", ns, "patch", "deployment", name, "-p", patch, "--dry-run=server", check=False)
    return out.returncode != 0 and REFUSAL in out.stderr


def shadow_report_cli(daemon: DaemonProcess) -> str:
    env = {"ROLLBACKD_TOKEN": ADMIN_TOKEN, "ROLLBACKD_URL": daemon.url, "COLUMNS": "200", "TERM": "dumb"}
    result = CliRunner().invoke(main, ["shadow", "report", "--since", "7d"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
async def store_url(store_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database for the daemon: SQLite in the test's directory, or one on the stack's PostgreSQL."""
    if store_backend == "postgres":
        return str(await request.getfixturevalue("postgres").new_database())
    return f"sqlite+aiosqlite:///{tmp_path / 'daemon' / 'rollbackd.sqlite'}"


def incidents_for(daemon: DaemonProcess, target: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{daemon.url}/api/v1/incidents", headers=ADMIN, timeout=10)
    resp.raise_for_status()
    return [i for i in resp.json()["incidents"] if target in str(i)]


def record(daemon: DaemonProcess, incident_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{daemon.url}/api/v1/incidents/{incident_id}", headers=ADMIN, timeout=10)
    resp.raise_for_status()
    return dict(resp.json())


def held_why(rec: dict[str, Any]) -> tuple[str, str]:
    step = next(t for t in rec["timeline"] if t["action"] == "rollback_held")
    return step["actor"], step["detail"]["why"]


def describe(kube: KubeCluster, ns: str, name: str) -> str:
    return kube.kubectl("-n", ns, "describe", "deployment", name).stdout


def described_with(kube: KubeCluster, ns: str, name: str, reason: str) -> str | None:
    out = describe(kube, ns, name)
    return out if reason in out else None


def resource_version(kube: KubeCluster, ns: str, name: str) -> str:
    return str(kube.kubectl_json("-n", ns, "get", "deployment", name)["metadata"]["resourceVersion"])  # type: ignore[index]


async def summaries(store_url: str, incident_id: str) -> list[str]:
    store = Store(store_url)
    try:
        async with store.transaction() as s:
            rows = await s.scalars(select(OutboxRow).where(OutboxRow.incident_id == incident_id))
            return [r.payload.get("summary", "") for r in rows if r.channel == "slack"]
    finally:
        await store.close()


async def test_shadow_one_attempt_and_events_on_the_cluster(
    kube: KubeCluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str,
    fake_slack: FakeSlack,  # noqa: F811 - the fixture imported above
) -> None:  # fmt: skip
    shadowed, rolled, refusing = (f"{p}-{uuid.uuid4().hex[:4]}" for p in ("sh", "rb", "rf"))
    await asyncio.to_thread(deploy_with_history, kube, namespace, [shadowed, rolled, refusing])
    await asyncio.to_thread(kube.kubectl, "-n", namespace, "label", "deployment", refusing, f"{REFUSE_LABEL}=yes")
    policy = await asyncio.to_thread(refuse_dry_runs, kube, namespace)
    monkeypatch.setenv("AUTOMATION_TEST_SLACK_TOKEN", SLACK_TOKEN)
    slack_cfg = {"enabled": True, "token": {"env": "AUTOMATION_TEST_SLACK_TOKEN"}, "base_url": fake_slack.base_url,
                 "default_channel": "#incidents"}  # fmt: skip
    daemon = DaemonProcess(
        tmp_path / "daemon", rules=[rules_file("shadow", tmp_path / "rules")], kubeconfig=kube.kubeconfig,
        extra={"slack": slack_cfg, "store": {"url": store_url}}, log_level="info",
    )  # fmt: skip
    try:
        await until("the policy refuses kubectl's dry run", lambda: dry_run_refused(kube, namespace, refusing), 30)
        await asyncio.to_thread(daemon.start)
        # Shadow: the whole path, nothing written.
        rv = await asyncio.to_thread(resource_version, kube, namespace, shadowed)
        shadow_alert = await asyncio.to_thread(fire, daemon, "ShadowProbe", namespace, shadowed)
        target = f"{namespace}/{shadowed}"
        shadow = await until(
            "the shadow decision is recorded",
            lambda: [i for i in incidents_for(daemon, target) if i["state"] == "open" and held(daemon, i["id"])],
            within=30,
        )
        actor, why = held_why(record(daemon, shadow[0]["id"]))
        assert actor == "guard:shadow"
        assert why.startswith(f"would roll back {target} revision 2 → 1: shadow rule shadow-probe"), why
        texts = await summaries(store_url, shadow[0]["id"])
        assert texts
        assert all(t.startswith("SHADOW (nothing is changed): ") for t in texts), texts
        await until("Slack shows the SHADOW label", lambda: any("SHADOW" in m.text for m in fake_slack.top_level()), 15)
        await asyncio.sleep(2)  # a write, if one were coming, has had its chance
        assert await asyncio.to_thread(resource_version, kube, namespace, shadowed) == rv
        assert await asyncio.to_thread(revision, kube, namespace, shadowed) == 2

        await dry_run_refused_and_shadow_report(daemon, namespace, refusing, shadowed, shadow[0]["id"], shadow_alert)

        # A rollback, its Events and annotation.
        await asyncio.to_thread(fire, daemon, "LatencyProbe", namespace, rolled)
        await until("rolled back", lambda: revision(kube, namespace, rolled) == 3, within=60)
        first = await until("the first incident", lambda: incidents_for(daemon, f"{namespace}/{rolled}"), 10)
        events = await until(
            "kubectl describe shows RolledBack",
            lambda: described_with(kube, namespace, rolled, "RolledBack"),
            within=30,
        )
        line = f"revision 2 → 1 by rule probe-rollback-now, incident {first[0]['id']}, no approval required"
        assert "RollbackDecided" in events
        assert line in " ".join(events.split())
        dep = await asyncio.to_thread(kube.kubectl_json, "-n", namespace, "get", "deployment", rolled)
        assert dep["metadata"]["annotations"]["rollbackd.io/incident"] == first[0]["id"]  # type: ignore[index]

        # The same bad template again: not rolled back automatically.
        await asyncio.to_thread(
            kube.kubectl, "-n", namespace, "set", "image", f"deployment/{rolled}", f"web={IMAGE}:v2"
        )
        await asyncio.to_thread(
            kube.kubectl, "-n", namespace, "rollout", "status", f"deployment/{rolled}", "--timeout=120s", timeout=130
        )
        assert await asyncio.to_thread(revision, kube, namespace, rolled) == 4
        await until(
            "the first incident is resolved",
            lambda: all(i["state"] == "resolved" for i in incidents_for(daemon, f"{namespace}/{rolled}")),
            within=60,
        )
        await asyncio.to_thread(fire, daemon, "LatencyProbe", namespace, rolled)
        second = await until(
            "the second trigger is escalated",
            lambda: [i for i in incidents_for(daemon, f"{namespace}/{rolled}") if i["state"] == "escalated"],
            within=60,
        )
        actor, why = held_why(record(daemon, second[0]["id"]))
        assert actor == "guard:one_attempt"
        assert "one automated attempt per bad revision: revision 4 is the template already rolled back" in why
        assert await asyncio.to_thread(revision, kube, namespace, rolled) == 4
        refused = await until(
            "kubectl describe shows RollbackRefused",
            lambda: described_with(kube, namespace, rolled, "RollbackRefused"),
            within=30,
        )
        print("\n" + refused)
    finally:
        await asyncio.to_thread(daemon.stop)
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            await asyncio.to_thread(kube.kubectl, "delete", kind, policy, "--ignore-not-found")


async def dry_run_refused_and_shadow_report(
    daemon: DaemonProcess, namespace: str, refusing: str, shadowed: str, shadow_id: str, shadow_alert: dict[str, Any]
) -> None:
    """A refused dry run is the API server's answer on the hold; then the shadow report, by API and CLI."""
    target = f"{namespace}/{shadowed}"
    # The dry run is the API server's: where its admission refuses one, the hold says so.
    await asyncio.to_thread(fire, daemon, "ShadowProbe", namespace, refusing)
    refused_dry = await until(
        "the refused dry run is recorded",
        lambda: [i for i in incidents_for(daemon, f"{namespace}/{refusing}") if held(daemon, i["id"])],
        within=30,
    )
    _, why = held_why(record(daemon, refused_dry[0]["id"]))
    assert why.startswith(f"would roll back {namespace}/{refusing} (failed: "), why
    assert REFUSAL in why, why
    assert "): shadow rule shadow-probe: decided and dry-run only" in why, why

    # The shadow report: one would-be rollback of the shadowed Deployment, resolved without it.
    await asyncio.to_thread(resolve, daemon, shadow_alert)
    await until("the shadow incident resolved", lambda: record(daemon, shadow_id)["state"] == "resolved", within=30)
    resp = await asyncio.to_thread(
        httpx.get, f"{daemon.url}/api/v1/automation/shadow?since_s=604800", headers=ADMIN, timeout=10
    )
    [report] = resp.json()["rules"]
    assert (report["rule"], report["would_roll_back"], report["resolved_without_rollback"]) == (
        "shadow-probe", 2, 1
    )  # fmt: skip
    assert report["targets"] == {target: 1, f"{namespace}/{refusing}": 1}
    assert report["incidents"] == [shadow_id, refused_dry[0]["id"]]
    table = await asyncio.to_thread(shadow_report_cli, daemon)
    row = next(line for line in table.splitlines() if "shadow-probe" in line)
    cells = [c.strip() for c in row.strip().strip("│┃").split("│")]
    assert cells[:5] == ["shadow-probe", "2", "1", "1", "0"], table  # would, resolved without, open, other
    print("\n" + table)


def held(daemon: DaemonProcess, incident_id: str) -> bool:
    return any(t["action"] == "rollback_held" for t in record(daemon, incident_id)["timeline"])


CHRISTMAS = datetime(2026, 12, 25, 12, 0, tzinfo=UTC)  # inside the ``holidays`` window (scope all)
AFTER_HOLIDAYS_S = 35 * 3600 + 60  # to 2026-12-26 23:01 UTC: the window ended at midnight in Berlin


def freeze_alert(fp: str, target: Target, status: AlertStatus = AlertStatus.FIRING) -> Alert:
    return Alert(
        name="FreezeProbe", status=status, labels=MappingProxyType({}), annotations=MappingProxyType({}),
        starts_at=CHRISTMAS, fingerprint=fp, source="alertmanager", target=target,
    )  # fmt: skip


async def test_a_freeze_window_blocks_the_rollback_inside_it_and_not_outside_on_the_cluster(
    kube: KubeCluster, namespace: str, store: Store, tmp_path: Path, kube_api: object
) -> None:
    name = f"fz-{uuid.uuid4().hex[:4]}"
    await asyncio.to_thread(deploy_with_history, kube, namespace, [name])
    ruleset, errors, _ = load_ruleset([rules_file("freeze", tmp_path / "rules")])
    assert ruleset is not None, errors
    clock = FakeClock(CHRISTMAS)  # the guard's: the time the window is about
    settings = KubernetesSettings(kubeconfig=kube.kubeconfig, rollout_timeout_s=120)
    executor = RollbackExecutor(kube_api, store, SystemClock(), settings)  # type: ignore[arg-type]
    guard = AutomationGuard(store, clock, Pauses(store, clock), freeze=freeze_check(lambda: ruleset.freeze_windows))
    service = IncidentService(
        store, SystemClock(), [], executor, manual_rollback=lambda: ruleset.manual_rollback, guard=guard
    )  # fmt: skip
    target = Target(namespace, name)
    decision = Decision(rule="freeze-probe", severity=Severity.P1, action=ActionKind.ROLLBACK_NOW, targets=(target,))
    try:
        rv = await asyncio.to_thread(resource_version, kube, namespace, name)
        inside = await service.on_decision(decision, freeze_alert("fz1", target))
        await service.idle()
        held = await service.get(inside.id)
        assert held.state == "escalated"
        step = next(t for t in held.timeline if t.action == "rollback_held")
        assert step.actor == "guard:freeze"
        assert step.detail["why"].startswith(
            f"would roll back {target} revision 2 → 1: freeze window holidays (change freeze) "
            "until 2026-12-26 23:00 UTC"
        ), step.detail["why"]
        assert await asyncio.to_thread(resource_version, kube, namespace, name) == rv
        await service.on_alert_resolved(freeze_alert("fz1", target, AlertStatus.RESOLVED))

        await clock.advance(AFTER_HOLIDAYS_S)
        outside = await service.on_decision(decision, freeze_alert("fz2", target))
        await service.idle()
        done = await service.get(outside.id)
        assert not [t for t in done.timeline if t.action == "rollback_held"]
        assert await asyncio.to_thread(revision, kube, namespace, name) == 3
        assert done.state == "resolved", done.state
    finally:
        await service.close()
