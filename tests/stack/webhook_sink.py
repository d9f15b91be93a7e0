"""A recording HTTP receiver for smoke tests: webhooks, Alertmanager API posts.

A stdlib HTTP server in a background thread on a free loopback port. Every
POST/PUT is recorded (method, path, headers, raw body, parsed JSON, arrival
time) and answered with ``status`` (200 by default) and ``{}``; GET answers
200 with the number of recorded requests, so it also passes health checks::

    sink = WebhookSink().start()
    ... point a sender at sink.url + "/hook" ...
    hit = sink.wait_for(lambda r: r.path == "/hook" and r.json["status"] == "firing", timeout=60)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.stack.base import LoopbackHTTP


@dataclass(frozen=True)
class Recorded:
    """One request the sink received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any  # None when the body is not JSON
    received_at: float  # time.monotonic()
    received_wall: float  # time.time()

    def header(self, name: str) -> str | None:
        """A header, case-insensitively."""
        lower = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lower), None)


class WebhookSink:
    """Records every POST/PUT; ``wait_for`` blocks until one matches."""

    name = "webhook-sink"

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self._cond = threading.Condition()
        self._requests: list[Recorded] = []
        self._http = LoopbackHTTP("webhook-sink")

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of everything recorded so far, oldest first."""
        with self._cond:
            return list(self._requests)

    def clear(self) -> None:
        with self._cond:
            self._requests.clear()

    def _record(self, request: Recorded) -> None:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Recorded], bool], timeout: float = 30.0) -> Recorded:
        """The first recorded request (already there or still to come) that satisfies ``predicate``.

        A predicate that raises (e.g. ``KeyError`` on an unexpected body) counts as no match.
        Raises ``TimeoutError`` listing what did arrive.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for request in self._requests[seen:]:
                    try:
                        if predicate(request):
                            return request
                    except Exception:  # noqa: BLE001, S112 - a predicate that cannot read it: no match
                        continue
                seen = len(self._requests)
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [f"{r.method} {r.path} {r.body[:200]!r}" for r in self._requests[-5:]]
                    raise TimeoutError(
                        f"webhook sink: no matching request in {timeout:.0f}s; "
                        f"{len(self._requests)} received, last: {got}"
                    )
                self._cond.wait(left)

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return self._http.address

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.address}"

    def start(self) -> WebhookSink:
        if self._http.running:
            return self
        sink = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0 (the default): one request per connection, so nothing lingers after stop()

            def _receive(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    parsed: Any = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                sink._record(
                    Recorded(
                        method=self.command,
                        path=self.path,
                        headers=dict(self.headers.items()),
                        body=body,
                        json=parsed,
                        received_at=time.monotonic(),
                        received_wall=time.time(),
                    )
                )
                self._answer(sink.status, b"{}")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self._receive()

            def do_PUT(self) -> None:
                self._receive()

            def do_GET(self) -> None:
                self._answer(200, json.dumps({"received": len(sink.requests)}).encode())

            def log_message(self, format: str, *args: object) -> None:
                return

        self._http.start(Handler)
        return self

    def stop(self) -> None:
        self._http.stop()
