"""A responder's night in a real browser: the Slack link, sign-in, the list, the page, ack, approve, reject, sign-out.

Headless Chromium against a whole in-process rollbackd (``Daemon``: every
router and middleware, uvicorn on loopback) with the Slack fake behind the
real slack_sdk client. Alerts arrive through the real Alertmanager webhook and
the shipped rules decide. Everything is done with the keyboard; every page
is checked for unlabeled form fields and for Content-Security-Policy
violations (there must be none: no inline script or style anywhere).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from daemon.app import Daemon
from tests.browser.conftest import VIEWPORT, shot
from tests.daemon_process import free_port
from tests.fakes.fixtures import SLACK_TOKEN, fake_slack  # noqa: F401 - the fixture
from tests.fakes.slack_server import FakeSlack
from tests.harness import bearer
from tests.web_daemon import CODES, WEB_TOKENS, alert_webhook, web_settings

pytestmark = pytest.mark.integration

XSS = '<script>document.title="pwned"</script>'
XSS_ANNOTATION = "<img src=x onerror=alert(1)>"

# Every visible form field has a label (a <label for>, a wrapping label or aria-label).
UNLABELED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML)"""


class Daemonised:
    def __init__(self, daemon: Daemon, slack: FakeSlack) -> None:
        self.daemon = daemon
        self.slack = slack
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


_RULES = {"ServiceDown": "service-completely-down", "DataCorruptionDetected": "data-corruption-detected"}


@pytest.fixture
async def stack(
    tmp_path: Path,
    fake_slack: FakeSlack,  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Daemonised]:
    monkeypatch.setenv("WEB_TEST_SLACK_TOKEN", SLACK_TOKEN)
    port = free_port()  # fixed before start, so the public URL in every Slack message is this daemon's
    settings = web_settings(
        tmp_path,
        http={"port": port, "public_url": f"http://127.0.0.1:{port}"},
        slack={"enabled": True, "token": {"env": "WEB_TEST_SLACK_TOKEN"}, "base_url": fake_slack.base_url},
    )
    async with Daemon(settings) as daemon:
        yield Daemonised(daemon, fake_slack)


class Watch:
    """What a page must never do: fire a dialog, change its title, break the CSP."""

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
    await shot(page, "incident", tmp_path)
    await watch.check(page)

    await _acknowledge_then_approve(page, watch, stack, incident_id, tmp_path)
    await context.close()


async def _acknowledge_then_approve(
    page: Page, watch: Watch, stack: Daemonised, incident_id: str, tmp_path: Path
) -> None:
    # Acknowledge: Slack hears about it through the outbox.
    await tab_to(page, "button:has-text('Acknowledge')")
    await page.keyboard.press("Enter")
    await expect(page.locator(".notice")).to_contain_text("Acknowledged")
    await stack.slack_text("Acknowledged by alice")
    assert (await stack.record(incident_id))["acknowledged_by"] == "alice"

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
    # carol's page, left open, follows the change by itself (its script polls the incident's version).
    await expect(carol_page.locator(".idline .state")).to_have_text("rejected", timeout=15_000)
    await carol.close()

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
