"""The CLI's HTTP client against a loopback server: statuses as answers, no redirects, clear failures."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from daemon.cli import http
from tests.stack.base import LoopbackHTTP

SEEN: list[tuple[str, str | None]] = []  # (path, Authorization) of every request the servers got
ELSEWHERE: list[str] = []  # where /moved redirects to: the second server


class Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        SEEN.append((self.path, self.headers.get("Authorization")))
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", f"http://{ELSEWHERE[0]}/stolen")
            self.end_headers()
            return
        status, body = (200, b'{"ok": true}') if self.path == "/json" else (502, b"<html>bad gateway</html>")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[str]:
    SEEN.clear()
    api, elsewhere = LoopbackHTTP("cli-api"), LoopbackHTTP("elsewhere")
    api.start(Api)
    elsewhere.start(Api)
    ELSEWHERE[:] = [elsewhere.address]
    try:
        yield f"http://{api.address}"
    finally:
        api.stop()
        elsewhere.stop()


def test_json_and_error_statuses_are_answers(servers: str) -> None:
    url = servers
    assert http.call(url, "GET", "/json", token="t0ken") == http.Answer(200, {"ok": True})
    bad = http.call(url, "GET", "/other", token=None)
    assert (bad.status, bad.ok, bad.body) == (502, False, "<html>bad gateway</html>")
    assert SEEN == [("/json", "Bearer t0ken"), ("/other", None)]


def test_a_redirect_is_not_followed_and_the_token_goes_nowhere_else(servers: str) -> None:
    answer = http.call(servers, "GET", "/moved", token="t0ken")
    assert answer.status == 302
    assert not answer.ok
    assert [path for path, _ in SEEN] == ["/moved"], "the redirect was followed, with the token"


def test_no_listener_is_unreachable_with_the_reason() -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(http.Unreachable, match="connection refused"):
            http.call(f"http://127.0.0.1:{port}", "GET", "/json", token=None, timeout=5)
