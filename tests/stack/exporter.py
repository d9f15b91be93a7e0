"""A tiny Prometheus exporter whose metric values the tests set at run time.

It serves ``GET /metrics`` in the Prometheus text exposition format (0.0.4)
from a stdlib HTTP server in a background thread on a free loopback port::

    exporter = Exporter().start()
    exporter.set("http_error_ratio", 0.2, labels={"namespace": "default", "deployment": "web"})
    exporter.inc("http_requests_total", 5, labels={"deployment": "web"})

Prometheus scrapes ``exporter.address``. ``scrapes`` counts the scrapes so a
test can wait until a change has been seen (``wait_scraped``).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Literal

from tests.stack.base import LoopbackHTTP

Kind = Literal["gauge", "counter"]
LabelKey = tuple[tuple[str, str], ...]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label_key(labels: dict[str, str] | None) -> LabelKey:
    return tuple(sorted((labels or {}).items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class _Family:
    kind: Kind
    help: str
    samples: dict[LabelKey, float] = field(default_factory=dict)


class Exporter:
    """Gauges and counters served at ``http://127.0.0.1:PORT/metrics``."""

    name = "exporter"

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._families: dict[str, _Family] = {}
        self._http = LoopbackHTTP("exporter")
        self.scrapes = 0

    # -- values -------------------------------------------------------------

    def _family(self, name: str, kind: Kind, help_text: str) -> _Family:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(kind, help_text or f"{name} (rollbackd test exporter)")
        elif family.kind != kind:
            raise ValueError(f"{name} is a {family.kind}, not a {kind}")
        return family

    def set(
        self,
        name: str,
        value: float,
        labels: dict[str, str] | None = None,
        *,
        kind: Kind = "gauge",
        help_text: str = "",
    ) -> None:
        """Set the sample ``name{labels}`` to ``value`` (a gauge unless ``kind="counter"``)."""
        with self._lock:
            self._family(name, kind, help_text).samples[_label_key(labels)] = float(value)

    def inc(
        self,
        name: str,
        amount: float = 1.0,
        labels: dict[str, str] | None = None,
        *,
        kind: Kind = "counter",
        help_text: str = "",
    ) -> float:
        """Add ``amount`` to ``name{labels}`` (a counter unless ``kind="gauge"``); the new value."""
        if kind == "counter" and amount < 0:
            raise ValueError("a counter only goes up")
        with self._lock:
            samples = self._family(name, kind, help_text).samples
            key = _label_key(labels)
            samples[key] = samples.get(key, 0.0) + float(amount)
            return samples[key]

    def get(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        with self._lock:
            family = self._families.get(name)
            return None if family is None else family.samples.get(_label_key(labels))

    def remove(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Drop one sample, or the whole family when ``labels`` is None."""
        with self._lock:
            if labels is None:
                self._families.pop(name, None)
            elif name in self._families:
                self._families[name].samples.pop(_label_key(labels), None)

    def clear(self) -> None:
        with self._lock:
            self._families.clear()

    def render(self) -> str:
        """The exposition text, as served at ``/metrics``."""
        lines: list[str] = []
        with self._lock:
            for name, family in sorted(self._families.items()):
                lines.append(f"# HELP {name} {family.help}")
                lines.append(f"# TYPE {name} {family.kind}")
                for key, value in sorted(family.samples.items()):
                    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
                    lines.append(f"{name}{{{labels}}} {_number(value)}" if labels else f"{name} {_number(value)}")
        return "\n".join(lines) + "\n"

    def _scraped(self) -> None:
        with self._lock:
            self.scrapes += 1
            self._lock.notify_all()

    def wait_scraped(self, after: int | None = None, count: int = 1, timeout: float = 30.0) -> int:
        """Wait until ``count`` more scrapes than ``after`` (default: now) happened; the scrape count."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = (self.scrapes if after is None else after) + count
            while self.scrapes < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"exporter: {self.scrapes} scrapes, waited for {target}")
                self._lock.wait(left)
            return self.scrapes

    # -- server -------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the scrape target."""
        return self._http.address

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def start(self) -> Exporter:
        if self._http.running:
            return self
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                exporter._scraped()

            def log_message(self, format: str, *args: object) -> None:
                return

        self._http.start(Handler)
        return self

    def stop(self) -> None:
        self._http.stop()
