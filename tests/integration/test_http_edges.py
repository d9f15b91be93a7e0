"""Malformed and hostile requests at ``rollbackd run`` over real HTTP: each gets its 4xx, nothing else moves.

One daemon process (SQLite, the shipped rules, no cluster) with the default
limits, plus a ``read`` token with a small rate limit. Every case in ``CASES``
is sent over a real socket; each answer must be the expected status with a
reason, the refusal must be counted in ``rollbackd_http_rejected_total`` under
its route and reason, no case may produce a 5xx, and afterwards the daemon is
healthy, a valid alert is still accepted, the inbox holds only the valid alerts
and the log holds no traceback. ``test_zz_cases_and_answers`` prints the table
of every case and its answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.daemon_process import ADMIN_TOKEN, INGEST_TOKEN, DaemonProcess
from tests.metrics_util import Samples, delta, samples
from tests.webhooks import firing_alert, iso

pytestmark = pytest.mark.integration

LIMITED_TOKEN = "edge-limited-" + uuid.uuid4().hex
PD_SECRET = "edge-pd-" + uuid.uuid4().hex
RUN = uuid.uuid4().hex[:8]
REJECTED = "rollbackd_http_rejected_total"
ANSWERS: list[tuple[str, int, str]] = []  # (case, status, reason): the closing note's table


def _token(name: str, secret: str, scopes: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(secret.encode()).hexdigest(), "scopes": scopes, **extra}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    os.environ["EDGE_PD_WEBHOOK"] = PD_SECRET
    tokens = [
        _token("bench", INGEST_TOKEN, ["ingest"]),
        _token("admin", ADMIN_TOKEN, ["read", "admin"]),
        _token("limited", LIMITED_TOKEN, ["read"], rate_limit={"per_second": 0.2, "burst": 3}),
    ]
    proc = DaemonProcess(
        tmp_path_factory.mktemp("edges"),
        log_level="info",
        extra={"http": {"tokens": tokens}, "pagerduty": {"webhook_secrets": [{"env": "EDGE_PD_WEBHOOK"}]}},
    ).start()
    yield proc
    proc.stop()


def am(alerts: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {
            "version": "4", "groupKey": f"edge:{RUN}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "rollbackd", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am", "alerts": alerts,
        }
    ).encode()  # fmt: skip


_seq = iter(range(1, 1_000_000))


def alert(**labels_or_annotations: Any) -> dict[str, Any]:
    """A distinct firing Alertmanager alert; ``labels=`` / ``annotations=`` are merged in."""
    a = firing_alert("EdgeProbe", "edge", "web", next(_seq), RUN)
    a["labels"].update(labels_or_annotations.get("labels", {}))
    a["annotations"].update(labels_or_annotations.get("annotations", {}))
    a["fingerprint"] = uuid.uuid4().hex[:16]
    return a


def prom(items: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        [{"labels": i["labels"], "annotations": i["annotations"], "startsAt": iso(datetime.now(UTC))} for i in items]
    ).encode()


JSON = {"Content-Type": "application/json"}
INGEST = {"Authorization": f"Bearer {INGEST_TOKEN}"}
MANY = {f"k{i}": "v" for i in range(10_000)}


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    reason: str
    body: bytes | Callable[[], Iterator[bytes]] | None = None
    headers: dict[str, str] | None = None
    route: str | None = None  # the route template it is counted under; default: path

    def send(self, client: httpx.Client) -> httpx.Response:
        content = self.body() if callable(self.body) else self.body
        return client.request(self.method, self.path, content=content, headers=self.headers)


def _chunks(total: int) -> Callable[[], Iterator[bytes]]:
    def gen() -> Iterator[bytes]:
        sent = 0
        while sent < total:
            yield b" " * 65536
            sent += 65536

    return gen


BIG = 2 << 20  # over the 1 MiB default
CASES = [
    Case("oversized body, Content-Length", "POST", "/webhooks/alertmanager", 413, "body_too_large",
         b" " * BIG, INGEST | JSON),
    Case("oversized body, chunked", "POST", "/webhooks/alertmanager", 413, "body_too_large",
         _chunks(BIG), INGEST | JSON),
    Case("oversized body, chunked, Prometheus push", "POST", "/api/v2/alerts", 413, "body_too_large",
         _chunks(BIG), INGEST | JSON),
    Case("oversized body, chunked, PagerDuty webhook", "POST", "/pagerduty/webhook", 413, "body_too_large",
         _chunks(BIG), JSON),
    Case("JSON sent as text/plain", "POST", "/webhooks/alertmanager", 415, "unsupported_media_type",
         am([alert()]), INGEST | {"Content-Type": "text/plain"}),
    Case("JSON without Content-Type", "POST", "/api/v2/alerts", 415, "unsupported_media_type",
         prom([alert()]), INGEST),
    Case("JSON as form data, Prometheus prefix", "POST", "/prometheus/api/v2/alerts", 415,
         "unsupported_media_type", prom([alert()]), INGEST | {"Content-Type": "application/x-www-form-urlencoded"},
         "/prometheus/api/v2/alerts"),
    Case("approval as text/plain", "POST", "/api/v1/incidents/nope/approve", 415, "unsupported_media_type",
         b'{"approver":"a","code":"1"}', {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "text/plain"},
         "/api/v1/incidents/{incident_id}/approve"),
    Case("10,000 labels, Alertmanager", "POST", "/webhooks/alertmanager", 400, "too_many_labels",
         am([alert(labels=MANY)]), INGEST | JSON),
    Case("10,000 labels, Prometheus push", "POST", "/api/v2/alerts", 400, "too_many_labels",
         prom([alert(labels=MANY)]), INGEST | JSON),
    Case("100 annotations", "POST", "/webhooks/alertmanager", 400, "too_many_annotations",
         am([alert(annotations={f"a{i}": "x" for i in range(100)})]), INGEST | JSON),
    Case("label name of 300 characters", "POST", "/webhooks/alertmanager", 400, "name_too_long",
         am([alert(labels={"n" * 300: "v"})]), INGEST | JSON),
    Case("label value of 3,000 characters", "POST", "/api/v2/alerts", 400, "label_value_too_long",
         prom([alert(labels={"pod": "v" * 3000})]), INGEST | JSON),
    Case("annotation value of 20,000 characters", "POST", "/webhooks/alertmanager", 400,
         "annotation_value_too_long", am([alert(annotations={"description": "d" * 20_000})]), INGEST | JSON),
    Case("malformed JSON", "POST", "/webhooks/alertmanager", 400, "malformed_json", b"{not json", INGEST | JSON),
    Case("no bearer token", "POST", "/webhooks/alertmanager", 401, "unauthenticated", am([alert()]), JSON),
    Case("token without the ingest scope", "POST", "/webhooks/alertmanager", 403, "missing_scope",
         am([alert()]), {"Authorization": f"Bearer {LIMITED_TOKEN}"} | JSON),
    Case("unsigned PagerDuty webhook", "POST", "/pagerduty/webhook", 401, "unauthenticated", b"{}", JSON),
]  # fmt: skip


def _signed_pd(body: bytes, content_type: str) -> dict[str, str]:
    sig = "v1=" + hmac.new(PD_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-PagerDuty-Signature": sig, "Content-Type": content_type}


PD_BODY = b'{"event": {"id": "E1", "event_type": "incident.acknowledged"}}'
CASES.append(
    Case("signed PagerDuty webhook as text/plain", "POST", "/pagerduty/webhook", 415, "unsupported_media_type",
         PD_BODY, _signed_pd(PD_BODY, "text/plain"))
)  # fmt: skip


@pytest.fixture(scope="module")
def client(daemon: DaemonProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon.url, timeout=30) as c:
        yield c


def scrape(client: httpx.Client) -> Samples:
    return samples(client.get("/metrics").text)


def inbox_alerts(daemon: DaemonProcess) -> int:
    with sqlite3.connect(daemon.db) as db:
        return int(db.execute("select count(*) from inbox where kind = 'alert'").fetchone()[0])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_bad_request_gets_its_4xx_counted_and_changes_nothing(
    daemon: DaemonProcess, client: httpx.Client, case: Case
) -> None:
    before, stored = scrape(client), inbox_alerts(daemon)
    resp = case.send(client)
    reason = _reason(resp)
    ANSWERS.append((case.name, resp.status_code, reason))
    assert resp.status_code == case.status, (case.name, resp.status_code, resp.text[:300])
    assert reason, f"{case.name}: a refusal without a reason: {resp.text[:300]}"
    counted = delta(before, scrape(client), REJECTED, route=case.route or case.path, reason=case.reason)
    assert counted == 1, f"{case.name}: counted {counted} under reason {case.reason}"
    assert inbox_alerts(daemon) == stored, f"{case.name} changed the inbox"
    assert client.get("/healthz").status_code == 200


def _reason(resp: httpx.Response) -> str:
    body = resp.json()
    detail = body.get("detail")
    if isinstance(detail, dict):
        return f"{detail.get('reason')}: {str(detail.get('message'))[:110]}"
    return str(detail or body.get("errors"))[:120]


def _raw(port: int, request: bytes) -> tuple[int, str]:
    """Send ``request`` as is; (status, body) of the answer, read until the server closes or goes quiet."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        # The server may answer and close before all of a lying body is sent: that is the point.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            s.sendall(request)
        s.settimeout(1.0)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(65536):
                answer += chunk
    text = answer.decode(errors="replace")
    return int(text.split(" ", 2)[1]), text.split("\r\n\r\n", 1)[-1]


def test_a_lying_content_length_is_cut_at_what_it_declared(daemon: DaemonProcess, client: httpx.Client) -> None:
    """Content-Length says 20 bytes, 50 KB follow: the server reads 20 (broken JSON, 400) and drops the rest."""
    stored = inbox_alerts(daemon)
    body = am([alert()]) + b" " * 50_000
    head = (
        f"POST /webhooks/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INGEST_TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 20\r\n\r\n"
    ).encode()
    status, answer = _raw(daemon.port, head + body)
    ANSWERS.append(("Content-Length 20 with 50 KB sent", status, answer[:110]))
    assert status == 400, answer[:300]
    assert inbox_alerts(daemon) == stored
    assert client.get("/healthz").status_code == 200


def test_a_declared_length_over_the_limit_is_refused_before_the_body(daemon: DaemonProcess) -> None:
    """Content-Length of 10 MiB and no body sent at all: 413 at once, without waiting to read it."""
    head = (
        f"POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INGEST_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {10 << 20}\r\n\r\n"
    ).encode()
    status, answer = _raw(daemon.port, head)
    ANSWERS.append(("Content-Length 10 MiB, nothing sent", status, answer[:110]))
    assert status == 413, answer[:300]


def test_valid_alerts_beside_a_refused_one_are_accepted(daemon: DaemonProcess, client: httpx.Client) -> None:
    stored = inbox_alerts(daemon)
    good, bad, also_good = alert(), alert(labels=MANY), alert()
    resp = client.post("/webhooks/alertmanager", content=am([good, bad, also_good]), headers=INGEST | JSON)
    ANSWERS.append(("batch: 2 valid alerts and one with 10,000 labels", resp.status_code, _reason(resp)))
    assert resp.status_code == 400
    detail = resp.json()["detail"]
    assert detail["accepted"] == 2
    assert [r["index"] for r in detail["refused"]] == [1]
    assert detail["refused"][0]["limit"] == "http.alert_limits.max_labels"
    assert inbox_alerts(daemon) == stored + 2


def test_a_token_over_its_rate_gets_429_with_retry_after(client: httpx.Client) -> None:
    limited = {"Authorization": f"Bearer {LIMITED_TOKEN}"}
    before = scrape(client)
    answers = [client.get("/api/v1/incidents", headers=limited) for _ in range(6)]
    codes = [r.status_code for r in answers]
    assert codes[:3] == [200, 200, 200], codes  # the burst
    refused = [r for r in answers if r.status_code == 429]
    assert refused, codes
    ANSWERS.append(("read token over its rate (0.2/s, burst 3), 6 requests", 429, _reason(refused[0])))
    assert int(refused[0].headers["Retry-After"]) >= 1
    counted = delta(before, scrape(client), REJECTED, route="/api/v1/incidents", reason="rate_limited")
    assert counted == len(refused)


def test_ingest_tokens_are_not_rate_limited_by_default(client: httpx.Client) -> None:
    codes = {
        client.post("/webhooks/alertmanager", content=am([alert()]), headers=INGEST | JSON).status_code
        for _ in range(40)
    }
    ANSWERS.append(("ingest token, 40 webhooks at once", max(codes), "accepted"))
    assert codes == {200}


def test_zz_daemon_healthy_and_a_valid_alert_still_accepted(daemon: DaemonProcess, client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    resp = client.post("/webhooks/alertmanager", content=am([alert()]), headers=INGEST | JSON)
    assert resp.status_code == 200
    assert resp.json() == {"accepted": 1, "duplicates": 0}
    pushed = client.post("/api/v2/alerts", content=prom([alert()]), headers=INGEST | JSON)
    assert pushed.json() == {"accepted": 1, "duplicates": 0}
    time.sleep(0.2)  # let the log flush
    log = (daemon.workdir / "rollbackd.log").read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]
    assert all(status < 500 for _, status, _ in ANSWERS), ANSWERS
    print("\ncase | answer | reason")
    for name, status, reason in ANSWERS:
        print(f"{name} | {status} | {reason}")
