"""A multi-tenant query front end over HTTPS, as Mimir's gateway or Grafana Cloud put before Prometheus.

Prometheus itself checks neither bearer tokens nor tenants, so this gateway
does, the way those front ends answer: a request without ``Authorization:
Bearer <token>`` gets 401, one without ``X-Scope-OrgID: <tenant>`` gets 401
``no org id`` (Mimir's words), and an accepted request is relayed to the real
Prometheus at ``upstream`` and its answer returned unchanged. ``seen`` keeps
the headers of every request, for tests that check what a client sent::

    gateway = TenantGateway(prometheus.url, tls, token="t", tenant="team-a").start()
    ... query gateway.url ...
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.tls import TlsFiles
from tests.stack.base import LoopbackHTTP


class TenantGateway:
    """HTTPS on a free loopback port; relays authorised GETs and POSTs to ``upstream``."""

    name = "tenant-gateway"

    def __init__(self, upstream: str, tls: TlsFiles, *, token: str, tenant: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.tls = tls
        self.token = token
        self.tenant = tenant
        self.seen: list[dict[str, str]] = []
        self._http = LoopbackHTTP(self.name)

    @property
    def url(self) -> str:
        return f"https://{self._http.address}"

    def _refusal(self, headers: dict[str, str]) -> str | None:
        lowered = {k.lower(): v for k, v in headers.items()}
        if lowered.get("authorization") != f"Bearer {self.token}":
            return "authentication required"
        if lowered.get("x-scope-orgid") != self.tenant:
            return "no org id"
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                headers = dict(self.headers.items())
                gateway.seen.append(headers)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if (refusal := gateway._refusal(headers)) is not None:
                    self._answer(401, "text/plain", refusal.encode())
                    return
                forwarded = {k: v for k, v in headers.items() if k.lower() in ("content-type", "accept")}
                request = urllib.request.Request(  # noqa: S310 - the loopback upstream
                    gateway.upstream + self.path, data=body or None, method=self.command, headers=forwarded
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                        self._answer(resp.status, resp.headers.get("Content-Type", ""), resp.read())
                except urllib.error.HTTPError as exc:
                    self._answer(exc.code, exc.headers.get("Content-Type", ""), exc.read())

            def _answer(self, status: int, content_type: str, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _relay  # noqa: N815 - http.server's names

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def start(self) -> TenantGateway:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        self._http.start(self._handler(), tls=context)
        return self

    def stop(self) -> None:
        self._http.stop()
