"""The incident pages over loopback HTTP against a whole in-process rollbackd: sign-in, CSRF, proxy, escaping, secrecy.

The daemon is built as ``rollbackd run`` builds it (``Daemon``: every router
and middleware, uvicorn on loopback), on each ``--store``; alerts arrive through the real
Alertmanager webhook and are decided by the shipped rules. The browser tests
(``tests/browser``) drive the same pages in Chromium.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from daemon.app import Daemon
from daemon.control.pauses import Pauses
from daemon.deploys import DeployEvent, DeployKind
from daemon.ingest.history import DeployHistoryStore
from daemon.metrics import REGISTRY
from daemon.scope import Scope, ScopeKind
from daemon.store.db import Store
from daemon.web import pages
from tests.api_app import app_for
from tests.harness import TOKENS, bearer
from tests.web_daemon import CODES, SHIPPED_RULES, WEB_TOKENS, alert_webhook, web_settings

pytestmark = pytest.mark.integration

XSS_LABEL = '<script>document.title="pwned"</script>'
XSS_ANNOTATION = '"><img src=x onerror=alert(1)>'


async def _daemon(tmp_path: Path, **groups: Any) -> Daemon:
    return Daemon(web_settings(tmp_path, **groups))


@pytest.fixture
async def daemon(tmp_path: Path, store_backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Daemon]:
    """The daemon on SQLite, or on a new database of the stack's PostgreSQL (``--store``)."""
    groups: dict[str, Any] = {}
    if store_backend == "postgres":
        groups["store"] = {"url": str(await request.getfixturevalue("postgres").new_database())}
    async with await _daemon(tmp_path, **groups) as d:
        yield d


def _client(d: Daemon, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.port}", timeout=10, **kw)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, who: str, next_url: str = "/incidents") -> httpx.Response:
    form = await http.get("/signin")
    return await http.post("/signin", data={"csrf": csrf_of(form.text), "token": WEB_TOKENS[who], "next": next_url})


async def open_incident(d: Daemon, http: httpx.AsyncClient, alertname: str = "ServiceDown", **kw: Any) -> str:
    sent = await http.post("/webhooks/alertmanager", json=alert_webhook(alertname, **kw), headers=bearer("ingest"))
    assert sent.status_code in (200, 202), sent.text
    await d.components.dispatcher.wait_idle()
    listed = (await http.get("/api/v1/incidents", headers=bearer("read"))).json()["incidents"]
    return str(listed[0]["id"])


def _rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("rollbackd_input_rejected_total", {"source": "web", "reason": reason}) or 0.0


async def test_the_link_in_a_page_leads_to_the_incident_after_sign_in(daemon: Daemon) -> None:
    async with _client(daemon) as http:
        root = await http.get("/")
        assert (root.status_code, root.headers["location"]) == (303, "/incidents")
        incident_id = await open_incident(daemon, http)
        refused = await http.get(f"/incidents/{incident_id}")
        assert refused.status_code == 303
        assert refused.headers["location"] == f"/signin?next=%2Fincidents%2F{incident_id}"
        signed = await sign_in(http, "alice", next_url=f"/incidents/{incident_id}")
        assert (signed.status_code, signed.headers["location"]) == (303, f"/incidents/{incident_id}")
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "secure" not in cookie  # plain HTTP here
        page = await http.get(f"/incidents/{incident_id}")
        assert page.status_code == 200
        assert incident_id in page.text
        assert "service-completely-down" in page.text
        assert "8.1 Service completely down" in page.text  # the seed row of the rule
        assert "proceeds automatically at" in page.text  # on_deadline: proceed
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp


async def test_a_link_followed_from_another_site_reloads_itself_to_carry_the_strict_cookie(daemon: Daemon) -> None:
    async with _client(daemon) as http:
        incident_id = await open_incident(daemon, http)
    # A browser does not send a SameSite=Strict cookie with a link followed from another site.
    async with _client(daemon) as fresh:
        cross = await fresh.get(f"/incidents/{incident_id}", headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 200
        assert f'http-equiv="refresh" content="0; url=/incidents/{incident_id}"' in cross.text
        same = await fresh.get(f"/incidents/{incident_id}", headers={"Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 303
        assert same.headers["location"].startswith("/signin")


async def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(daemon: Daemon) -> None:
    async with _client(daemon) as http:
        incident_id = await open_incident(daemon, http)
        await sign_in(http, "alice")
        before = _rejected("csrf")
        for data in ({}, {"csrf": "0" * 64}):
            ack = await http.post(f"/incidents/{incident_id}/ack", data=data)
            assert ack.status_code == 403, ack.text
            approve = await http.post(f"/incidents/{incident_id}/approve", data={**data, "code": CODES["alice"]})
            assert approve.status_code == 403
            reject = await http.post(
                f"/incidents/{incident_id}/reject", data={**data, "code": CODES["alice"], "reason": "no"}
            )
            assert reject.status_code == 403
            assert (await http.post("/signout", data=data)).status_code == 403
        assert _rejected("csrf") - before == 8
        assert (await http.get("/incidents")).status_code == 200  # the refused sign-out ended nothing
        record = (await http.get(f"/api/v1/incidents/{incident_id}", headers=bearer("read"))).json()
        assert record["acknowledged_by"] is None
        assert record["approvals"] == []
        assert record["state"] == "awaiting_approval"
        # The sign-in form has its own token, bound to a cookie of the sign-in page.
        assert (await http.post("/signin", data={"token": WEB_TOKENS["alice"]})).status_code == 403


async def test_wrong_code_shows_the_error_and_changes_nothing_the_right_one_moves_on(daemon: Daemon) -> None:
    async with _client(daemon) as http:
        incident_id = await open_incident(daemon, http)
        await sign_in(http, "alice")
        csrf = csrf_of((await http.get(f"/incidents/{incident_id}")).text)
        wrong = await http.post(f"/incidents/{incident_id}/approve", data={"csrf": csrf, "code": "000000"})
        assert wrong.status_code == 403
        assert "wrong approval code for alice; 4 tries left" in wrong.text
        assert "000000" not in wrong.text
        record = (await http.get(f"/api/v1/incidents/{incident_id}", headers=bearer("read"))).json()
        assert record["state"] == "awaiting_approval"
        assert record["approvals"] == []
        right = await http.post(f"/incidents/{incident_id}/approve", data={"csrf": csrf, "code": CODES["alice"]})
        assert (right.status_code, right.headers["location"]) == (303, f"/incidents/{incident_id}?done=approve")
        record = (await http.get(f"/api/v1/incidents/{incident_id}", headers=bearer("read"))).json()
        assert [(a["approver"], a["via"]) for a in record["approvals"]] == [("alice", "web")]
        assert record["state"] != "awaiting_approval"


async def test_wrong_codes_lock_the_approver_out_on_the_api_s_count_and_no_code_is_shown_or_logged(
    daemon: Daemon,
) -> None:
    """The pages and the API share one lockout per approver; codes appear in no page and no log line."""
    wrong = [f"wrong-{i}-{CODES['alice'][-8:]}" for i in range(5)]
    with capture_logs() as logs:
        async with _client(daemon) as http:
            incident_id = await open_incident(daemon, http)
            await sign_in(http, "alice")
            csrf = csrf_of((await http.get(f"/incidents/{incident_id}")).text)
            pages = []
            for code in wrong[:3]:
                answer = await http.post(f"/incidents/{incident_id}/approve", data={"csrf": csrf, "code": code})
                assert answer.status_code == 403
                pages.append(answer.text)
            api = await http.post(
                f"/api/v1/incidents/{incident_id}/approve", json={"approver": "alice", "code": wrong[3]},
                headers=bearer("approve"),
            )  # fmt: skip
            assert api.status_code == 403
            assert api.json()["remaining_tries"] == 1  # the page's three counted: one count, not one per surface
            last = await http.post(f"/incidents/{incident_id}/approve", data={"csrf": csrf, "code": wrong[4]})
            assert "wrong approval code for alice; 0 tries left" in last.text
            pages.append(last.text)
            # Locked: the right code is refused too, here (423, as the API answers) and on the API.
            locked = await http.post(f"/incidents/{incident_id}/approve", data={"csrf": csrf, "code": CODES["alice"]})
            assert locked.status_code == 423
            assert "approver alice is locked out until" in locked.text
            pages.append(locked.text)
            rejected = await http.post(
                f"/incidents/{incident_id}/reject", data={"csrf": csrf, "code": CODES["alice"], "reason": "stop"}
            )
            assert rejected.status_code == 423
            api = await http.post(
                f"/api/v1/incidents/{incident_id}/approve", json={"approver": "alice", "code": CODES["alice"]},
                headers=bearer("approve"),
            )  # fmt: skip
            assert api.status_code == 423
            record = (await http.get(f"/api/v1/incidents/{incident_id}", headers=bearer("read"))).json()
            assert record["state"] == "awaiting_approval"
            assert record["approvals"] == []
    logged = repr(logs)
    for code in (*wrong, CODES["alice"]):
        assert code not in logged
        for html in pages:
            assert code not in html
    assert any(e.get("why") == "wrong code" for e in logs)  # the refusals were logged, without their codes


async def test_a_responder_who_is_no_approver_can_acknowledge_but_not_approve(daemon: Daemon) -> None:
    async with _client(daemon) as http:
        incident_id = await open_incident(daemon, http)
        await sign_in(http, "bob")
        page = await http.get(f"/incidents/{incident_id}")
        assert "bob is not a configured approver" in page.text
        assert 'name="code"' not in page.text
        csrf = csrf_of(page.text)
        refused = await http.post(f"/incidents/{incident_id}/approve", data={"csrf": csrf, "code": CODES["alice"]})
        assert refused.status_code == 400
        assert "not a configured approver" in refused.text
        ack = await http.post(f"/incidents/{incident_id}/ack", data={"csrf": csrf})
        assert ack.status_code == 303
        record = (await http.get(f"/api/v1/incidents/{incident_id}", headers=bearer("read"))).json()
        assert record["acknowledged_by"] == "bob"
        assert record["approvals"] == []


async def test_a_token_without_the_responder_scope_does_not_sign_in(daemon: Daemon) -> None:
    async with _client(daemon) as http:
        form = await http.get("/signin")
        before = _rejected("bad_token")
        for token in (TOKENS["read"], TOKENS["approve"], "not-a-token"):
            refused = await http.post("/signin", data={"csrf": csrf_of(form.text), "token": token})
            assert refused.status_code == 401
            assert "lacks the scope" in refused.text
            assert token not in refused.text
            assert "rollbackd_session" not in refused.headers.get("set-cookie", "")
        assert _rejected("bad_token") - before == 3
        assert (await http.get("/incidents")).status_code == 303


async def test_sign_out_ends_the_session_everywhere(daemon: Daemon) -> None:
    async with _client(daemon) as http:
        await sign_in(http, "alice")
        secret = http.cookies["rollbackd_session"]
        page = await http.get("/incidents")
        assert page.status_code == 200
        out = await http.post("/signout", data={"csrf": csrf_of(page.text)})
        assert (out.status_code, out.headers["location"]) == (303, "/signin")
    async with _client(daemon, cookies={"rollbackd_session": secret}) as replay:
        assert (await replay.get("/incidents")).status_code == 303  # the old cookie signs no one in


async def test_alert_text_renders_inert(daemon: Daemon) -> None:
    async with _client(daemon) as http:
        incident_id = await open_incident(
            daemon, http, labels={"team": XSS_LABEL}, annotations={"description": XSS_ANNOTATION},
            generator_url="javascript:alert(1)",
        )  # fmt: skip
        await sign_in(http, "alice")
        page = (await http.get(f"/incidents/{incident_id}")).text
        assert XSS_LABEL not in page
        assert XSS_ANNOTATION not in page
        assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in page
        assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
        assert 'href="javascript:' not in page  # a non-http generator URL is shown as text, not linked
        assert re.findall(r"<script\b[^>]*>", page) == ['<script src="/static/web/rollbackd.js" defer>']


async def test_no_code_token_or_secret_appears_in_any_page(daemon: Daemon) -> None:
    async with _client(daemon) as http:
        incident_id = await open_incident(daemon, http)
        await sign_in(http, "alice")
        session_secret = http.cookies["rollbackd_session"]
        page = await http.get(f"/incidents/{incident_id}")
        csrf = csrf_of(page.text)
        pages = [page.text]
        pages.append((await http.post(f"/incidents/{incident_id}/approve", data={"csrf": csrf, "code": "12345"})).text)
        pages.append(
            (await http.post(f"/incidents/{incident_id}/approve", data={"csrf": csrf, "code": CODES["alice"]})).text
        )
        for path in ("/incidents", f"/incidents/{incident_id}", "/rules", "/signin"):
            pages.append((await http.get(path, follow_redirects=True)).text)
        secrets = [*WEB_TOKENS.values(), *TOKENS.values(), *CODES.values(), "12345", session_secret]
        for html in pages:
            for secret in secrets:
                assert secret not in html


async def test_proxy_header_counts_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    web = {"proxy_user_header": "X-Forwarded-User", "trusted_proxies": ["10.99.0.0/16"]}
    async with await _daemon(tmp_path / "untrusted", web=web) as d, _client(d) as http:
        before = _rejected("untrusted_proxy_header")
        # Nor can the client name a trusted address for itself in X-Forwarded-For: the peer is the connection's.
        for spoof in ({}, {"X-Forwarded-For": "10.99.0.7"}, {"X-Forwarded-For": "10.99.0.7, 10.99.0.8"}):
            spoofed = await http.get("/incidents", headers={"X-Forwarded-User": "alice", **spoof})
            assert spoofed.status_code == 303, spoof
            assert spoofed.headers["location"].startswith("/signin")
        assert _rejected("untrusted_proxy_header") - before == 3
    web = {"proxy_user_header": "X-Forwarded-User", "trusted_proxies": ["127.0.0.1"], "users": {"alice@corp": "alice"}}
    async with await _daemon(tmp_path / "trusted", web=web) as d, _client(d) as http:
        incident_id = await open_incident(d, http)
        # A sidecar proxy on loopback names the browser's address in X-Forwarded-For, as oauth2-proxy does.
        headers = {"X-Forwarded-User": "alice@corp", "X-Forwarded-For": "203.0.113.9"}
        page = await http.get(f"/incidents/{incident_id}", headers=headers)
        assert page.status_code == 200
        assert "alice@corp" in page.text
        assert "Approve as alice" in page.text
        csrf = csrf_of(page.text)
        approve = await http.post(
            f"/incidents/{incident_id}/approve", data={"csrf": csrf, "code": CODES["alice"]}, headers=headers
        )
        assert approve.status_code == 303, approve.text
        # Another user through the same browser gets their own session: alice's form token is not theirs.
        other = await http.post(
            f"/incidents/{incident_id}/ack", data={"csrf": csrf}, headers={"X-Forwarded-User": "mallory"}
        )
        assert other.status_code == 403
        record = (await http.get(f"/api/v1/incidents/{incident_id}", headers=bearer("read"))).json()
        assert [a["approver"] for a in record["approvals"]] == ["alice"]
        assert record["acknowledged_by"] is None


async def test_the_session_cookie_is_secure_when_served_over_tls(tmp_path: Path) -> None:
    """Over https (at the daemon, or a trusted proxy's X-Forwarded-Proto) the cookies are Secure too."""
    settings = web_settings(tmp_path)
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'tls.sqlite'}")
    await store.upgrade()
    try:
        app = app_for(settings=settings, store=store)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://rollbackd.example") as http:
            signed = await sign_in(http, "alice")
            assert signed.status_code == 303
            cookie = signed.headers["set-cookie"].lower()
            assert "rollbackd_session=" in cookie
            assert "; secure" in cookie
            assert "samesite=strict" in cookie
    finally:
        await store.close()


@pytest.mark.parametrize(("trusted", "secure"), [(["127.0.0.1"], True), (["10.99.0.0/16"], False)])
async def test_a_trusted_proxy_that_terminated_tls_makes_the_cookies_secure(
    tmp_path: Path, trusted: list[str], secure: bool
) -> None:
    """``X-Forwarded-Proto: https`` counts from ``web.trusted_proxies`` only (here the peer is 127.0.0.1)."""
    https = {"X-Forwarded-Proto": "https"}
    async with await _daemon(tmp_path, web={"trusted_proxies": trusted}) as d, _client(d) as http:
        form = await http.get("/signin", headers=https)
        assert ("; secure" in form.headers["set-cookie"].lower()) is secure
        # The browser reached the proxy over https, so the sign-in form's cookie goes back, Secure or not.
        back = {**https, "Cookie": f"rollbackd_signin={form.cookies['rollbackd_signin']}"}
        http.cookies.clear()
        data = {"csrf": csrf_of(form.text), "token": WEB_TOKENS["alice"], "next": "/incidents"}
        signed = await http.post("/signin", data=data, headers=back)
        assert signed.status_code == 303, signed.text
        cookie = signed.headers["set-cookie"].lower()
        assert "rollbackd_session=" in cookie
        assert ("; secure" in cookie) is secure
        assert "httponly" in cookie
        assert "samesite=strict" in cookie


async def test_unknown_incidents_and_closed_ones_answer_plainly(daemon: Daemon) -> None:
    async with _client(daemon) as http:
        incident_id = await open_incident(daemon, http)
        await sign_in(http, "dave")
        missing = await http.get("/incidents/000000000000")
        assert missing.status_code == 404
        assert "There is no incident 000000000000." in missing.text
        page = await http.get(f"/incidents/{incident_id}")
        csrf = csrf_of(page.text)
        # dave (Data Lead) holds no role this incident needs: refused with the API's status, nothing recorded.
        refused = await http.post(f"/incidents/{incident_id}/approve", data={"csrf": csrf, "code": CODES["dave"]})
        assert refused.status_code == 403
        assert "holds none of the roles" in refused.text
        bad_filter = await http.get("/incidents?state=bogus")
        assert bad_filter.status_code == 400
        assert "state=&#39;bogus&#39;" in bad_filter.text


async def test_the_decision_record_shows_the_blamed_deploy_and_the_one_it_replaced(daemon: Daemon) -> None:
    history = DeployHistoryStore(daemon.components.store)
    now = datetime.now(UTC)
    for revision, image, commit, author, ago in (
        (6, "shop/checkout:1.9.0", "a1b2c3", "erin", 90),
        (7, "shop/checkout:2.0.0", "d4e5f6", "mallory", 10),
    ):
        await history.record(
            DeployEvent(
                event_id=f"deploy-{revision}", kind=DeployKind.SUCCEEDED, service="checkout", namespace="prod",
                deployment="checkout", at=now - timedelta(minutes=ago), revision=revision, image=image, commit=commit,
                author=author,
            )
        )  # fmt: skip
    async with _client(daemon) as http:
        incident_id = await open_incident(daemon, http)
        await sign_in(http, "alice")
        page = (await http.get(f"/incidents/{incident_id}")).text
        # The measured value (the annotation Prometheus fills in) against the rule's own condition.
        rated = await open_incident(daemon, http, "ApplicationErrorRate", annotations={"value": "0.072"})
        rate_page = (await http.get(f"/incidents/{rated}")).text
    assert "<dt>Author</dt><dd>mallory</dd>" in page
    assert "<code>a1b2c3</code> → <code>d4e5f6</code>" in page
    assert "<code>shop/checkout:1.9.0</code> → <code>shop/checkout:2.0.0</code>" in page
    assert "6 → 7; the rollback returns to 6" in page
    assert "error-rate-above-5-percent" in rate_page
    assert "<dt>Measured</dt><dd>value = 0.072; the rule acts when <code>value &gt; 0.05</code></dd>" in rate_page


async def test_pauses_of_automation_show_where_they_hold(daemon: Daemon) -> None:
    pauses = Pauses(daemon.components.store, daemon.clock)
    await pauses.pause(Scope(ScopeKind.NAMESPACE, "prod"), "code freeze <b>sale</b>", "erin", timedelta(hours=1))
    await pauses.pause(Scope(ScopeKind.NAMESPACE, "staging"), "staging rebuild", "erin", timedelta(hours=1))
    async with _client(daemon) as http:
        incident_id = await open_incident(daemon, http)
        await sign_in(http, "alice")
        listing = (await http.get("/incidents")).text
        page = (await http.get(f"/incidents/{incident_id}")).text
    assert "Automated rollback paused" in listing
    assert "staging rebuild" in listing
    assert "code freeze &lt;b&gt;sale&lt;/b&gt;" in page
    assert "staging rebuild" not in page  # that pause does not cover this incident's target


async def test_the_rules_page_shows_the_files_their_counts_the_last_reload_and_its_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    for shipped in SHIPPED_RULES:
        shutil.copy(shipped, rules / shipped.name)
    async with await _daemon(tmp_path, rules=[rules / p.name for p in SHIPPED_RULES]) as d, _client(d) as http:
        await sign_in(http, "alice")
        loaded = (await http.get("/api/v1/rules", headers=bearer("read"))).json()
        page = (await http.get("/rules")).text
        when = datetime.fromisoformat(loaded["last_reload_at"]).strftime("%Y-%m-%d %H:%M:%S UTC")
        assert f"<dt>When</dt><dd>{when}</dd>" in page
        assert '<span class="ok">loaded</span>' in page
        decisions = len(loaded["decisions"])
        assert f"{loaded['rule_count']} rules: {len(loaded['thresholds'])} thresholds, {decisions} decisions." in page
        matrix = next(f for f in loaded["files"] if f.endswith("rollback-matrix.yaml"))
        assert f"<tr><td><code>{matrix}</code></td><td>{decisions}</td></tr>" in page
        assert "<td>service-completely-down</td><td>P0</td><td>rollback_now</td>" in page

        # A broken edit: the reload fails, the page says so with the error, and the old rules stay.
        broken = (rules / "rollback-matrix.yaml").read_text().replace("severity: P0", "severity: <b>P9</b>", 1)
        (rules / "rollback-matrix.yaml").write_text(broken)
        reload = await http.post("/api/v1/rules/reload", headers=bearer("admin"))
        assert reload.json()["ok"] is False
        page = (await http.get("/rules")).text
        when = datetime.fromisoformat(reload.json()["at"]).strftime("%Y-%m-%d %H:%M:%S UTC")
        assert f"<dt>When</dt><dd>{when}</dd>" in page
        assert "failed: the previous rules stay in force" in page
        error = re.search(r'<pre class="error">(.*?)</pre>', page, re.S)
        assert error is not None
        assert "1 error(s)" in error.group(1)
        assert "rollback-matrix.yaml" in error.group(1)
        assert "<b>P9</b>" not in page  # the file's text is escaped like an alert's
        assert f"<tr><td><code>{matrix}</code></td><td>{decisions}</td></tr>" in page  # still the old set


async def test_the_list_shows_open_incidents_however_many_newer_ones_closed(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "LIST_LIMIT", 2)  # the page reads the newest two: three closed ones are newer
    async with _client(daemon) as http:
        still_open = await open_incident(daemon, http, deployment="ledger")
        closed = []
        for deployment in ("cart", "search", "auth"):
            incident_id = await open_incident(daemon, http, deployment=deployment)
            verdict = {"approver": "alice", "code": CODES["alice"], "comment": "not this one"}
            done = await http.post(f"/api/v1/incidents/{incident_id}/reject", json=verdict, headers=bearer("approve"))
            assert done.status_code == 200, done.text
            closed.append(incident_id)
        await sign_in(http, "alice")
        listing = (await http.get("/incidents")).text
    rows = re.findall(r'<tr class="(open|closed)">\s*<td><a class="id" href="/incidents/([0-9a-f]+)"', listing)
    assert rows[0] == ("open", still_open)
    assert [r[1] for r in rows[1:]] == closed[::-1][:2]  # then the newest closed ones, newest first
    assert "the newest 2 and up to 2 open ones" in listing


async def test_the_pages_can_be_turned_off(tmp_path: Path) -> None:
    async with await _daemon(tmp_path, web={"enabled": False}) as d, _client(d) as http:
        for path in ("/", "/incidents", "/signin", "/static/web/rollbackd.js"):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.get("/api/v1/incidents", headers=bearer("read"))).status_code == 200


async def test_signing_in_again_ends_the_previous_session(daemon: Daemon) -> None:
    async with _client(daemon) as http:
        await sign_in(http, "alice")
        alice = http.cookies["rollbackd_session"]
        await sign_in(http, "bob")
        assert http.cookies["rollbackd_session"] != alice
        assert "Signed in as <strong>bob</strong>" in (await http.get("/incidents")).text
    async with _client(daemon, cookies={"rollbackd_session": alice}) as replay:
        assert (await replay.get("/incidents")).status_code == 303


async def test_the_version_an_open_page_polls_moves_with_the_incident(daemon: Daemon) -> None:
    async with _client(daemon) as http:
        incident_id = await open_incident(daemon, http)
        assert (await http.get(f"/incidents/{incident_id}/version")).status_code == 401
        await sign_in(http, "alice")
        before = (await http.get(f"/incidents/{incident_id}/version")).json()
        assert before["state"] == "awaiting_approval"
        await http.post(f"/api/v1/incidents/{incident_id}/ack", headers=bearer("ack"))
        after = (await http.get(f"/incidents/{incident_id}/version")).json()
        assert after["updated_at"] > before["updated_at"]
        assert (await http.get("/incidents/000000000000/version")).status_code == 404
