"""The webhook receivers over HTTP (in-process ASGI): auth, signatures, size limits, reasons, backpressure."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from daemon.clock import FakeClock
from daemon.config import ApiToken, Settings
from daemon.ingest import Inbox
from daemon.metrics import INPUT_REJECTED, TRUNCATED_ALERTS
from daemon.store.db import Store
from daemon.store.tables import InboxRow
from tests.api_app import app_for

INGEST, READER = "ingest-token", "read-token"


def token(name: str, secret: str, scopes: list[str]) -> ApiToken:
    return ApiToken(name=name, sha256=hashlib.sha256(secret.encode()).hexdigest(), scopes=scopes)  # type: ignore[arg-type]


def make_app(store: Store, clock: FakeClock, settings: Settings, *, max_pending: int = 100) -> FastAPI:
    return app_for(settings=settings, clock=clock, inbox=Inbox(store, clock, max_pending=max_pending))


def am_body(name: str = "HighErrorRate", truncated: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": truncated,
        "status": "firing",
        "receiver": "rollbackd",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": name, "namespace": "shop", "deployment": "web"},
                "annotations": {},
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": "",
            }
        ],
        **extra,
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        http={
            "max_body_bytes": 4096,
            "tokens": [token("am", INGEST, ["ingest"]), token("viewer", READER, ["read"])],
        }
    )


@pytest.fixture
async def client(store: Store, clock: FakeClock, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(store, clock, settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rollbackd") as c:
        c.headers["Authorization"] = f"Bearer {INGEST}"
        yield c


async def count(store: Store) -> int:
    async with store.transaction() as s:
        return int((await s.execute(select(func.count()).select_from(InboxRow))).scalar_one())


async def test_accepted_once_then_duplicate(client: httpx.AsyncClient, store: Store) -> None:
    first = await client.post("/webhooks/alertmanager", json=am_body())
    again = await client.post("/webhooks/alertmanager", json=am_body())
    assert first.status_code == 200
    assert first.json() == {"accepted": 1, "duplicates": 0}
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 1}
    assert await count(store) == 1


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": ""}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Bearer {READER}"}, 403),
    ],
)
async def test_auth(client: httpx.AsyncClient, store: Store, headers: dict[str, str], status: int) -> None:
    response = await client.post("/webhooks/alertmanager", json=am_body(), headers=headers)
    assert response.status_code == status
    assert await count(store) == 0


@pytest.mark.parametrize(
    ("path", "body", "reason", "field"),
    [
        ("/webhooks/alertmanager", am_body(version="3"), "wrong_version", "version"),
        ("/webhooks/alertmanager", am_body(alerts=[{"status": "firing"}]), "invalid_field", "alerts.0.labels"),
        ("/webhooks/alertmanager", "{not json", "malformed_json", "(body)"),
        ("/api/v2/alerts", [{"labels": {"alertname": 1}}], "invalid_field", "0.labels.alertname"),
        ("/prometheus/api/v2/alerts", {"alerts": []}, "invalid_field", "(body)"),
    ],
)
async def test_malformed_bodies_get_400_naming_the_field_and_change_nothing(
    client: httpx.AsyncClient, store: Store, path: str, body: Any, reason: str, field: str
) -> None:
    source = "alertmanager" if "webhooks" in path else "prometheus"
    before = INPUT_REJECTED.labels(source=source, reason=reason)._value.get()
    raw = body if isinstance(body, str) else json.dumps(body)
    response = await client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail["reason"] == reason
    assert field in detail["message"]
    assert INPUT_REJECTED.labels(source=source, reason=reason)._value.get() == before + 1
    assert await count(store) == 0


async def test_oversized_bodies_get_413_by_header_and_by_stream(client: httpx.AsyncClient, store: Store) -> None:
    big = json.dumps(am_body(padding="x" * 5000))
    as_json = {"Content-Type": "application/json"}  # as Alertmanager sends it: the size is what is wrong
    assert (await client.post("/webhooks/alertmanager", content=big, headers=as_json)).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit must hold while reading
        for _ in range(10):
            yield b" " * 1000

    response = await client.post("/webhooks/alertmanager", content=chunks(), headers=as_json)
    assert response.status_code == 413
    assert await count(store) == 0


async def test_full_inbox_answers_503_with_retry_after(store: Store, clock: FakeClock, settings: Settings) -> None:
    app = make_app(store, clock, settings, max_pending=1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
        c.headers["Authorization"] = f"Bearer {INGEST}"
        assert (await c.post("/webhooks/alertmanager", json=am_body("A"))).status_code == 200
        response = await c.post("/webhooks/alertmanager", json=am_body("B"))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert await count(store) == 1


async def test_truncated_alerts_are_counted(client: httpx.AsyncClient) -> None:
    before = TRUNCATED_ALERTS._value.get()
    assert (await client.post("/webhooks/alertmanager", json=am_body(truncated=4))).status_code == 200
    assert TRUNCATED_ALERTS._value.get() == before + 4


async def test_prometheus_push_under_both_paths(client: httpx.AsyncClient, store: Store) -> None:
    item = {"labels": {"alertname": "X", "job": "a"}, "startsAt": "2026-01-01T00:00:00Z"}
    assert (await client.post("/api/v2/alerts", json=[item])).json() == {"accepted": 1, "duplicates": 0}
    assert (await client.post("/prometheus/api/v2/alerts", json=[item])).json() == {"accepted": 0, "duplicates": 1}


async def test_hmac_signature(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    secret = tmp_path / "hmac"
    secret.write_text("s3cret\n")
    settings = Settings(
        http={"tokens": [token("am", INGEST, ["ingest"])], "webhook_hmac_secret": {"file": str(secret)}}
    )
    app = make_app(store, clock, settings)
    body = json.dumps(am_body()).encode()
    good = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
        c.headers["Authorization"] = f"Bearer {INGEST}"
        c.headers["Content-Type"] = "application/json"
        missing = await c.post("/webhooks/alertmanager", content=body)
        wrong = await c.post("/webhooks/alertmanager", content=body, headers={"X-Rollbackd-Signature": "sha256=00"})
        assert await count(store) == 0
        ok = await c.post("/webhooks/alertmanager", content=body, headers={"X-Rollbackd-Signature": good})
    assert (missing.status_code, wrong.status_code, ok.status_code) == (401, 403, 200)
    assert await count(store) == 1
