"""A responder's night in a real browser: the Slack and PagerDuty links, sign-in, the list, the page, ack, approve,
reject, the rules page, sign-out.

Headless Chromium against a whole in-process rollbackd (``Daemon``: every
router and middleware, uvicorn on loopback) with the Slack fake behind the
real slack_sdk client and the PagerDuty fake (over TLS) behind the real
pagerduty client. Alerts arrive through the real Alertmanager webhook and the
shipped rules decide; the blamed deploy and the one before it are in the
deploy history. The store is each ``--store`` (SQLite, the stack's
PostgreSQL). Everything is done with the keyboard; every page is checked for
unlabeled form fields, for Content-Security-Policy violations (there must be
none: no inline script or style anywhere) and for secrets in its HTML.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from daemon.app import Daemon
from daemon.deploys import DeployEvent, DeployKind
from daemon.ingest.history import DeployHistoryStore
from daemon.notify.pagerduty import dedup_key
from tests.browser.conftest import VIEWPORT, shot
from tests.daemon_process import free_port
from tests.fakes.fixtures import ROUTING_KEY, SLACK_TOKEN, fake_pagerduty, fake_slack, tls  # noqa: F401 - fixtures
from tests.fakes.pagerduty_server import FakePagerDuty
from tests.fakes.slack_server import FakeSlack
from tests.fakes.tls import TlsFiles
from tests.harness import TOKENS, bearer
from tests.web_daemon import CODES, WEB_TOKENS, alert_webhook, web_settings

pytestmark = pytest.mark.integration

XSS = '<script>document.title="pwned"</script>'
XSS_ANNOTATION = "<img src=x onerror=alert(1)>"

# Every visible form field has a label (a <label for>, a wrapping label or aria-label).
UNLABELED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML)"""


class Daemonised:
    def __init__(self, daemon: Daemon, slack: FakeSlack, pagerduty: FakePagerDuty) -> None:
        self.daemon = daemon
        self.slack = slack
        self.pagerduty = pagerduty
        self.base = f"http://127.0.0.1:{daemon.port}"

    async def alert(self, alertname: str, **kw: Any) -> str:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as http:
            sent = await http.post(
                "/webhooks/alertmanager", json=alert_webhook(alertname, **kw), headers=bearer("ingest")
            )
            assert sent.status_code in (200, 202), sent.text
            await self.daemon.components.dispatcher.wait_idle()
            listed = (await http.get("/api/v1/incidents", headers=bearer("read"))).json()["incidents"]
        return str(next(i["id"] for i in listed if i["rule"] == _RULES[alertname]))

    async def record(self, incident_id: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as http:
            answer = await http.get(f"/api/v1/incidents/{incident_id}", headers=bearer("read"))
        return dict(answer.json())

    async def slack_text(self, wanted: str, within_s: float = 15.0) -> str:
        """The first Slack message (or edit) containing ``wanted``, waiting for the outbox to deliver it."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            for message in self.slack.messages.values():
                text = json.dumps({"text": message.text, "blocks": message.blocks, "edits": message.edits})
                if wanted in text:
                    return text
            await asyncio.sleep(0.1)
        raise AssertionError(f"Slack never saw {wanted!r}: {[m.text for m in self.slack.messages.values()]}")

    async def pagerduty_alert(self, incident_id: str, status: str, within_s: float = 15.0) -> str:
        """The link PagerDuty shows for the incident, once its alert there has reached ``status``."""
        key = dedup_key(incident_id)
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            alert = self.pagerduty.alerts.get(key)
            if alert is not None and alert.status == status:
                [url] = {
                    e["client_url"] for e in self.pagerduty.events if e.get("dedup_key") == key and e.get("client_url")
                }
                return str(url)
            await asyncio.sleep(0.1)
        seen = {k: (a.status, a.history) for k, a in self.pagerduty.alerts.items()}
        raise AssertionError(f"PagerDuty's alert {key} never became {status}: {seen}")

    async def deploys(self, deployment: str) -> None:
        """The blamed deploy 10 minutes ago and the one it replaced, in the deploy history the decision reads."""
        history = DeployHistoryStore(self.daemon.components.store)
        now = datetime.now(UTC)
        for revision, version, commit, author, ago in (
            (6, "2.4.1", "9f3c2a1", "erin", 300),
            (7, "2.5.0", "c0ffee7", "mallory", 10),
        ):
            await history.record(
                DeployEvent(
                    event_id=f"{deployment}-{revision}", kind=DeployKind.SUCCEEDED, service=deployment,
                    namespace="prod", deployment=deployment, at=now - timedelta(minutes=ago), revision=revision,
                    image=f"registry.example/shop/{deployment}:{version}", version=version, commit=commit,
                    author=author,
                )
            )  # fmt: skip


_RULES = {"ServiceDown": "service-completely-down", "DataCorruptionDetected": "data-corruption-detected"}


@pytest.fixture
async def stack(
    tmp_path: Path,
    fake_slack: FakeSlack,  # noqa: F811 - the fixture imported above
    fake_pagerduty: FakePagerDuty,  # noqa: F811
    tls: TlsFiles,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    store_backend: str,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Daemonised]:
    store = {}
    if store_backend == "postgres":
        store["url"] = str(await request.getfixturevalue("postgres").new_database())
    monkeypatch.setenv("WEB_TEST_SLACK_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("WEB_TEST_PD_KEY", ROUTING_KEY)
    port = free_port()  # fixed before start, so the public URL in every Slack message and page is this daemon's
    settings = web_settings(
        tmp_path,
        http={"port": port, "public_url": f"http://127.0.0.1:{port}"},
        slack={"enabled": True, "token": {"env": "WEB_TEST_SLACK_TOKEN"}, "base_url": fake_slack.base_url},
        pagerduty={
            "enabled": True, "routing_keys": {"production-oncall": {"env": "WEB_TEST_PD_KEY"}},
            "base_url": fake_pagerduty.base_url, "ca_file": str(tls.cert),
        },
        **({"store": store} if store else {}),
    )  # fmt: skip
    async with Daemon(settings) as daemon:
        yield Daemonised(daemon, fake_slack, fake_pagerduty)


# What no page may contain: every token, code and the notifiers' secrets (the session cookie is added per check).
SECRETS = (*WEB_TOKENS.values(), *TOKENS.values(), *CODES.values(), SLACK_TOKEN, ROUTING_KEY)


class Watch:
    """What a page must never do: fire a dialog, change its title, break the CSP, show a secret."""

    def __init__(self, page: Page) -> None:
        self.dialogs: list[str] = []
        self.csp: list[str] = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
        page.on("console", lambda m: self.csp.append(m.text) if "Content Security Policy" in m.text else None)

    async def check(self, page: Page) -> None:
        assert await page.evaluate(UNLABELED) == [], f"unlabeled fields on {page.url}"
        assert self.dialogs == []
        assert self.csp == []
        assert "pwned" not in await page.title()
        html = await page.content()
        cookies = [c["value"] for c in await page.context.cookies() if c["name"].startswith("rollbackd_")]
        leaked = [i for i, secret in enumerate((*SECRETS, *cookies)) if secret in html]
        assert leaked == [], f"secrets #{leaked} in the HTML of {page.url}"


async def _context(browser: Browser) -> tuple[BrowserContext, Page, Watch]:
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = await context.new_page()
    page.set_default_timeout(15_000)
    return context, page, Watch(page)


async def tab_to(page: Page, selector: str, limit: int = 60) -> None:
    """Press Tab until ``selector`` has the focus: the keyboard alone must reach it."""
    target = page.locator(selector)
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await target.evaluate("e => e === document.activeElement"):
            return
    raise AssertionError(f"{selector} not reachable with Tab")


async def sign_in_by_keyboard(page: Page, who: str) -> None:
    await expect(page.locator("h1")).to_have_text("Sign in")
    await expect(page.locator("#token")).to_be_focused()  # autofocus: type straight away
    await page.keyboard.type(WEB_TOKENS[who])
    await page.keyboard.press("Enter")


async def test_slack_link_sign_in_list_open_acknowledge_and_approve(
    browser: Browser, stack: Daemonised, tmp_path: Path
) -> None:
    await stack.deploys("checkout")
    incident_id = await stack.alert("ServiceDown", labels={"team": XSS}, annotations={"description": XSS_ANNOTATION})
    slack_message = await stack.slack_text(incident_id)
    link = re.search(r"<(http://[^|>]+/incidents/[0-9a-f]+)\|", slack_message)
    assert link is not None, slack_message
    assert link.group(1) == f"{stack.base}/incidents/{incident_id}"

    context, page, watch = await _context(browser)
    await page.goto(link.group(1))  # the responder taps the link in Slack
    await shot(page, "sign-in", tmp_path)
    await watch.check(page)
    await sign_in_by_keyboard(page, "alice")
    await expect(page).to_have_url(link.group(1))  # back where the link pointed, signed in
    await expect(page.locator("#incident-id")).to_have_text(incident_id)
    await watch.check(page)

    # The list: the real alert is there, open, with its full id; the keyboard opens it.
    await page.goto(f"{stack.base}/incidents")
    row = page.locator("table.incidents tbody tr", has_text=incident_id)
    await expect(row).to_contain_text("service-completely-down")
    await expect(row).to_contain_text("prod/checkout")
    await expect(row).to_contain_text("awaiting_approval")
    await expect(row).to_contain_text("1x Engineering Lead")
    await shot(page, "list", tmp_path)
    await watch.check(page)
    await page.keyboard.press("Tab")
    await expect(page.locator("a.skip")).to_be_focused()  # the first Tab stop skips the navigation
    await tab_to(page, f'a.id[href="/incidents/{incident_id}"]')
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{stack.base}/incidents/{incident_id}")

    # Alert text is shown as text: the label's <script> is visible, not run.
    await expect(page.locator("article.alert")).to_contain_text(XSS)
    await expect(page.locator("article.alert")).to_contain_text(XSS_ANNOTATION)
    await expect(page.locator("#next-h + p")).to_contain_text("proceeds automatically at")
    deploy = page.locator("#decision-h ~ dl.facts").nth(1)
    await expect(deploy).to_contain_text("mallory")
    await expect(deploy).to_contain_text("registry.example/shop/checkout:2.4.1 → registry.example/shop/checkout:2.5.0")
    await expect(deploy).to_contain_text("6 → 7; the rollback returns to 6")
    await shot(page, "incident", tmp_path)
    await watch.check(page)

    await _acknowledge_then_approve(page, watch, stack, incident_id, tmp_path, browser)
    await context.close()


async def _acknowledge_then_approve(
    page: Page, watch: Watch, stack: Daemonised, incident_id: str, tmp_path: Path, browser: Browser
) -> None:
    # Acknowledge: Slack and PagerDuty hear about it through the outbox.
    await tab_to(page, "button:has-text('Acknowledge')")
    await page.keyboard.press("Enter")
    await expect(page.locator(".notice")).to_contain_text("Acknowledged")
    await stack.slack_text("Acknowledged by alice")
    pagerduty_link = await stack.pagerduty_alert(incident_id, "acknowledged")
    assert (await stack.record(incident_id))["acknowledged_by"] == "alice"

    # The link in the PagerDuty alert: bob taps it, signs in, and is on the same incident's page.
    assert pagerduty_link == f"{stack.base}/incidents/{incident_id}"
    bob, bob_page, bob_watch = await _context(browser)
    await bob_page.goto(pagerduty_link)
    await sign_in_by_keyboard(bob_page, "bob")
    await expect(bob_page).to_have_url(pagerduty_link)
    await expect(bob_page.locator("#incident-id")).to_have_text(incident_id)
    await expect(bob_page.locator("#next-h ~ p", has_text="Acknowledged by")).to_contain_text("alice")
    await bob_watch.check(bob_page)
    await bob.close()

    # A wrong code: the error shows, nothing changes.
    await tab_to(page, "#approve-code")
    await page.keyboard.type("999999")
    await page.keyboard.press("Enter")
    await expect(page.locator("#action-error")).to_contain_text("wrong approval code for alice; 4 tries left")
    await shot(page, "wrong-code", tmp_path)
    await watch.check(page)
    record = await stack.record(incident_id)
    assert record["state"] == "awaiting_approval"
    assert record["approvals"] == []

    # The right code moves the incident on (a dry run here: no cluster).
    await tab_to(page, "#approve-code")
    await page.keyboard.type(CODES["alice"])
    await page.keyboard.press("Enter")
    await expect(page.locator(".notice")).to_contain_text("Approval recorded")
    record = await stack.record(incident_id)
    assert [(a["approver"], a["via"]) for a in record["approvals"]] == [("alice", "web")]
    assert record["state"] != "awaiting_approval"
    html = await page.content()
    assert CODES["alice"] not in html
    assert WEB_TOKENS["alice"] not in html


async def _rules_page(page: Page, watch: Watch) -> None:
    """The rules page, through the navigation by keyboard: what is loaded and the last reload."""
    await page.keyboard.press("Tab")  # the skip link
    await tab_to(page, "nav a[href='/rules']")
    await page.keyboard.press("Enter")
    await expect(page.locator("h1")).to_have_text("Rules")
    await expect(page.locator("#reload-h + dl")).to_contain_text("loaded")
    await expect(page.locator("table", has_text="service-completely-down")).to_contain_text("rollback_now")
    await watch.check(page)


async def test_reject_after_a_partial_quorum_then_sign_out_and_be_refused(
    browser: Browser, stack: Daemonised, tmp_path: Path
) -> None:
    incident_id = await stack.alert("DataCorruptionDetected", deployment="ledger")
    url = f"{stack.base}/incidents/{incident_id}"

    carol, page, watch = await _context(browser)
    await page.goto(url)
    await sign_in_by_keyboard(page, "carol")
    await tab_to(page, "#approve-code")
    await page.keyboard.type(CODES["carol"])
    await page.keyboard.press("Enter")
    await expect(page.locator(".notice")).to_contain_text("Approval recorded")
    progress = page.locator("#approvals-h + table")
    await expect(progress.locator("tr", has_text="CTO")).to_contain_text("carol")
    await expect(progress.locator("tr", has_text="Data Lead")).to_contain_text("0 of 1")
    await shot(page, "partial-quorum", tmp_path)
    await watch.check(page)
    assert (await stack.record(incident_id))["missing_roles"] == {"Data Lead": 1}
    carol_page = page

    dave, page, watch = await _context(browser)
    await page.goto(url)
    await sign_in_by_keyboard(page, "dave")
    await tab_to(page, "#reject-code")
    await page.keyboard.type(CODES["dave"])
    await page.keyboard.press("Tab")
    await page.keyboard.type("the migration cannot be undone; restoring from backup instead")
    await tab_to(page, "button:has-text('Reject')")
    await page.keyboard.press("Enter")
    await expect(page.locator(".notice")).to_contain_text("Rejected")
    await expect(page.locator(".idline .state")).to_have_text("rejected")
    await shot(page, "rejected", tmp_path)
    await watch.check(page)
    record = await stack.record(incident_id)
    assert record["state"] == "rejected"
    assert [(a["approver"], a["verdict"]) for a in record["approvals"]] == [("carol", "approve"), ("dave", "reject")]
    await stack.pagerduty_alert(incident_id, "resolved")  # the rejection closed PagerDuty's alert too
    await stack.slack_text("dave")
    # carol's page, left open, follows the change by itself (its script polls the incident's version).
    await expect(carol_page.locator(".idline .state")).to_have_text("rejected", timeout=15_000)
    await carol.close()

    await _rules_page(page, watch)

    # Sign out: the session ends, the page asks for sign-in again, the old cookie is refused.
    [cookie] = [c for c in await dave.cookies() if c["name"] == "rollbackd_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    await tab_to(page, "button:has-text('Sign out')")
    await page.keyboard.press("Enter")
    await expect(page.locator("h1")).to_have_text("Sign in")
    await page.goto(url)
    await expect(page.locator("h1")).to_have_text("Sign in")
    await dave.add_cookies([{"name": "rollbackd_session", "value": cookie["value"], "url": stack.base}])
    await page.goto(url)
    await expect(page.locator("h1")).to_have_text("Sign in")
    await dave.close()
