"""Every URL rollbackd emits resolves to a route it serves, followed from what it really sent.

``rollbackd run`` (a child process, as production runs it) with ``http.public_url``
pointing at itself, Slack and PagerDuty enabled against the loopback fakes
(the real ``slack_sdk`` and ``pagerduty`` clients), an alert that opens an
incident waiting for approval, and a break-glass rollback through the API.
Then every URL is collected from what left the daemon — the links in the
Slack message's blocks and text, PagerDuty's ``client_url`` and ``links``, the
API's ``Location`` header — and requested. A page behind sign-in counts as
served when it sends the browser to ``/signin``, which must itself answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pyotp
import pytest
import yaml

from tests.daemon_process import ADMIN_TOKEN, INGEST_TOKEN, DaemonProcess, free_port
from tests.fakes.fixtures import SLACK_TOKEN, fake_pagerduty, fake_slack, tls
from tests.fakes.pagerduty_server import FakePagerDuty
from tests.fakes.slack_server import FakeSlack
from tests.fakes.tls import TlsFiles
from tests.webhooks import firing_alert, webhook_bodies

pytestmark = pytest.mark.integration
__all__ = ["fake_pagerduty", "fake_slack", "tls"]

ROUTING_KEY = "R" + uuid.uuid4().hex[:31]
SEED = pyotp.random_base32()
APPROVER_TOKEN = "urls-approver-" + uuid.uuid4().hex
SLACK_LINK = re.compile(r"<(https?://[^|>]+)(?:\|[^>]*)?>")

RULES = {
    "apiVersion": "rollbackd/v1",
    "roles": ["Engineering Lead"],
    "channels": {"oncall": {"slack": "#incidents", "pagerduty": "default"}},
    "routing": {"P1": ["oncall"]},
    "manual_rollback": {"approval": {"any_of": {"Engineering Lead": 1}}},
    "decisions": [
        {
            "name": "url-probe", "match": ['alertname="UrlProbe"'], "severity": "P1", "action": "rollback_within",
            "within": "30m", "approval": {"all_of": ["Engineering Lead"], "deadline": "20m"}, "channels": ["oncall"],
        }
    ],
}  # fmt: skip


def _token(name: str, secret: str, scopes: list[str]) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(secret.encode()).hexdigest(), "scopes": scopes}


def daemon_for(tmp: Path, slack: FakeSlack, pd: FakePagerDuty, tls_files: TlsFiles) -> DaemonProcess:
    (tmp / "rules").mkdir(parents=True)
    (tmp / "rules" / "urls.yaml").write_text(yaml.safe_dump(RULES))
    (tmp / "ada.totp").write_text(SEED)
    os.environ["URLS_SLACK_TOKEN"] = SLACK_TOKEN
    os.environ["URLS_PD_KEY"] = ROUTING_KEY
    port = free_port()
    return DaemonProcess(
        tmp / "daemon", rules=[tmp / "rules" / "urls.yaml"], port=port, log_level="info",
        extra={
            "http": {
                "public_url": f"http://127.0.0.1:{port}",
                "tokens": [_token("bench", INGEST_TOKEN, ["ingest"]), _token("admin", ADMIN_TOKEN, ["read", "admin"]),
                           _token("ada-cli", APPROVER_TOKEN, ["read", "approve"])],
            },
            "slack": {"enabled": True, "token": {"env": "URLS_SLACK_TOKEN"}, "base_url": slack.base_url},
            "pagerduty": {"enabled": True, "routing_keys": {"default": {"env": "URLS_PD_KEY"}},
                          "base_url": pd.base_url, "ca_file": str(tls_files.cert)},
            "approvers": [{"name": "ada", "roles": ["Engineering Lead"],
                           "totp_secret": {"file": str(tmp / "ada.totp")}}],
        },
    )  # fmt: skip


async def _until(what: str, check: Callable[[], bool], seen: Callable[[], str]) -> None:
    try:
        async with asyncio.timeout(60):
            while not check():
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"timed out after 60 s waiting for {what}; saw {seen()}") from None


def slack_urls(slack: FakeSlack) -> set[str]:
    """Every link in every message and thread reply rollbackd posted or updated, blocks and text."""
    found: set[str] = set()
    for call in slack.calls:
        if call.method in ("chat.postMessage", "chat.update"):
            found |= set(SLACK_LINK.findall(json.dumps(call.args.get("blocks") or [], ensure_ascii=False)))
            found |= set(SLACK_LINK.findall(str(call.args.get("text") or "")))
            for block in call.args.get("blocks") or []:
                found |= {e["url"] for e in block.get("elements", []) if isinstance(e, dict) and e.get("url")}
    return found


def pagerduty_urls(pd: FakePagerDuty) -> set[str]:
    found: set[str] = set()
    for event in pd.events:
        if event.get("client_url"):
            found.add(event["client_url"])
        found |= {link["href"] for link in event.get("links", [])}
    return found


async def test_every_emitted_url_is_served(
    tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty, tls: TlsFiles
) -> None:
    proc = daemon_for(tmp_path, fake_slack, fake_pagerduty, tls)
    await asyncio.to_thread(proc.start)
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http:
            alert = firing_alert("UrlProbe", "shop", "web", 1, uuid.uuid4().hex[:8])
            (body,) = webhook_bodies([alert], random.Random(1))
            ingest = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
            assert (await http.post("/webhooks/alertmanager", content=body, headers=ingest)).status_code == 200
            rollback = await http.post(
                "/api/v1/rollbacks",
                json={"targets": ["shop/api"], "reason": "break-glass for the URL test",
                      "approvals": [{"approver": "ada", "code": pyotp.TOTP(SEED).now()}]},
                headers={"Authorization": f"Bearer {APPROVER_TOKEN}"},
            )  # fmt: skip
            assert rollback.status_code == 201, rollback.text
            location = urljoin(proc.url, rollback.headers["Location"])

            # The alert is decided after its 200, by the dispatcher: wait for its incident beside the break-glass one.
            async with asyncio.timeout(30):
                while True:
                    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
                    listed = (await http.get("/api/v1/incidents", headers=admin)).json()
                    ids = {i["id"] for i in listed["incidents"]}
                    if len(ids) == 2:
                        break
                    await asyncio.sleep(0.1)

            def linked(urls: set[str]) -> set[str]:
                return {urlsplit(u).path.rsplit("/", 1)[-1] for u in urls}

            def both_linked() -> bool:
                # Slack hears of both; PagerDuty of those the rules page (at least one here).
                return ids <= linked(slack_urls(fake_slack)) and bool(pagerduty_urls(fake_pagerduty))

            await _until(f"Slack and PagerDuty to link the incidents {sorted(ids)}", both_linked,
                         lambda: f"slack {slack_urls(fake_slack)}, pagerduty {pagerduty_urls(fake_pagerduty)}")
            emitted = {"slack": slack_urls(fake_slack), "pagerduty": pagerduty_urls(fake_pagerduty),
                       "location": {location}}  # fmt: skip
            print("\nemitted URLs:", json.dumps({k: sorted(v) for k, v in emitted.items()}, indent=1))
            for source, urls in emitted.items():
                for url in urls:
                    await _served(http, source, url)
            assert linked(set().union(*emitted.values())) == ids, "every link names a real incident"
    finally:
        await asyncio.to_thread(proc.stop)


async def _served(http: httpx.AsyncClient, source: str, url: str) -> None:
    """``url`` answers 200 (with the reader's token for the API), or sends the browser to a sign-in that answers."""
    assert url.startswith(http.base_url.__str__().rstrip("/")), f"{source}: {url} is not this daemon's public URL"
    path = urlsplit(url).path + (f"?{urlsplit(url).query}" if urlsplit(url).query else "")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if path.startswith("/api/") else {}
    resp = await http.get(path, headers=headers, follow_redirects=False)
    if resp.status_code in (302, 303, 307):
        target = resp.headers["location"]
        assert urlsplit(target).path == "/signin", f"{source}: {url} redirects to {target}, not to sign-in"
        signin = await http.get(target)
        assert signin.status_code == 200, f"{source}: sign-in page for {url}: {signin.status_code}"
        return
    assert resp.status_code == 200, f"{source}: {url} answered {resp.status_code}: {resp.text[:200]}"
