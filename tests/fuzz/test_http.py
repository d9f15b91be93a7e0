"""Bad input over HTTP at a running ``rollbackd run``: no 5xx, every rejection says why, no traceback.

One daemon process per module (SQLite store, the shipped rules, no cluster so
any rollback is a dry run, a Slack signing secret and a PagerDuty webhook
secret so the callbacks get past their signatures). Then:
- schemathesis walks the OpenAPI document with a token holding every scope;
- hypothesis posts mutated Alertmanager webhooks, and correctly *signed*
  mutated Slack interactions and PagerDuty webhooks;
- finally the daemon's log must hold no traceback and no error line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.daemon_process import DaemonProcess
from tests.fuzz.strategies import json_values, mutated
from tests.fuzz.test_parsers import WEBHOOK

pytestmark = pytest.mark.integration

TOKEN = "fuzz-all-scopes-" + uuid.uuid4().hex
SLACK_SECRET = "fuzz-slack-signing-" + uuid.uuid4().hex
PD_SECRET = "fuzz-pd-webhook-" + uuid.uuid4().hex
HTTP = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)

SLACK_ACTION = {
    "type": "block_actions",
    "user": {"id": "U0NOBODY"},
    "trigger_id": "t-1",
    "channel": {"id": "C1"},
    "actions": [{"action_id": "rollbackd:ack:abc123", "value": "x"}],
}
PD_EVENT = {
    "event": {
        "id": "E1",
        "event_type": "incident.acknowledged",
        "resource_type": "incident",
        "agent": {"id": "PUSER", "type": "user_reference", "summary": "Someone"},
        "data": {"id": "Q1", "incident_key": "rollbackd-abc123"},
    }
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    os.environ["FUZZ_SLACK_SIGNING"] = SLACK_SECRET
    os.environ["FUZZ_PD_WEBHOOK"] = PD_SECRET
    token = {
        "name": "fuzz",
        "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
        "scopes": ["read", "ack", "approve", "admin", "ingest"],
    }
    proc = DaemonProcess(
        tmp_path_factory.mktemp("fuzz-daemon"),
        log_level="info",
        extra={
            "http": {"tokens": [token]},
            "slack": {"signing_secret": {"env": "FUZZ_SLACK_SIGNING"}},
            "pagerduty": {"webhook_secrets": [{"env": "FUZZ_PD_WEBHOOK"}]},
        },
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(daemon: DaemonProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def _check(resp: httpx.Response) -> None:
    assert resp.status_code < 500, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text[:300]}"
    if resp.status_code >= 400:
        body = resp.json()
        assert body.get("detail") or body.get("errors"), f"a rejection without a reason: {resp.text[:300]}"


def test_openapi_operations_never_5xx(daemon: DaemonProcess) -> None:
    """schemathesis: cases generated from every operation of the OpenAPI document, all scopes granted."""
    api = schemathesis.openapi.from_url(f"{daemon.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    failures: list[str] = []

    for operation in operations:

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def one(case: Any) -> None:
            response = case.call(base_url=daemon.url, headers={"Authorization": f"Bearer {TOKEN}"})
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}")

        one()
    assert not failures, failures[:10]


@HTTP
@given(st.one_of(st.binary(max_size=200), mutated(WEBHOOK).map(lambda d: json.dumps(d).encode())))
def test_alertmanager_webhook_over_http(client: httpx.Client, body: bytes) -> None:
    resp = client.post("/webhooks/alertmanager", content=body, headers={"Content-Type": "application/json"})
    _check(resp)
    if resp.status_code >= 400:
        assert resp.json()["detail"]["reason"]


def _slack_form(doc: Any) -> bytes:
    return urllib.parse.urlencode({"payload": json.dumps(doc)}).encode()


@HTTP
@given(
    st.one_of(
        st.binary(max_size=200),
        json_values.map(_slack_form),
        mutated(SLACK_ACTION).map(_slack_form),
    )
)
def test_signed_slack_interactions(client: httpx.Client, body: bytes) -> None:
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(SLACK_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    resp = client.post(
        "/slack/interactivity",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sig,
        },
    )
    _check(resp)


@HTTP
@given(
    st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda d: json.dumps(d).encode()),
        mutated(PD_EVENT).map(lambda d: json.dumps(d).encode()),
    )
)
def test_signed_pagerduty_webhooks(client: httpx.Client, body: bytes) -> None:
    sig = "v1=" + hmac.new(PD_SECRET.encode(), body, hashlib.sha256).hexdigest()
    resp = client.post(
        "/pagerduty/webhook",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-PagerDuty-Signature": sig,
        },
    )
    _check(resp)


def test_unsigned_callbacks_are_refused(client: httpx.Client) -> None:
    body = _slack_form(SLACK_ACTION)
    resp = client.post(
        "/slack/interactivity",
        content=body,
        headers={"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=00"},
    )
    assert resp.status_code == 401
    resp = client.post("/pagerduty/webhook", content=json.dumps(PD_EVENT), headers={"X-PagerDuty-Signature": "v1=0"})
    assert resp.status_code == 401


def test_zz_no_unhandled_exception_in_the_log(daemon: DaemonProcess) -> None:
    """Runs last in this module: after all the bad input, the log holds no traceback or error line."""
    log = Path(daemon.workdir / "rollbackd.log").read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:4000]
    errors = [line for line in log.splitlines() if '"level": "error"' in line or '"level": "critical"' in line]
    assert not errors, errors[:5]
