"""The contract kit's harness: one per notifier, each driving the real client against its fake server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from daemon.clock import FakeClock
from daemon.notify.outbox import Notifier
from daemon.notify.pagerduty import PagerDutyNotifier
from tests.fakes.fixtures import (
    ROUTING_KEY,
    SIGNING_SECRET,
    SLACK_TOKEN,
    fake_pagerduty,
    fake_slack,
    pagerduty_notifier,
    slack_notifier,
    tls,
)
from tests.fakes.pagerduty_server import FakePagerDuty
from tests.fakes.slack_server import FakeSlack

__all__ = ["fake_pagerduty", "fake_slack", "tls"]

CLIENT_TIMEOUT_S = 1
STALL_S = 2.0


@dataclass
class Harness:
    """What the contract needs of a notifier and its server."""

    name: str
    make: Callable[[], Notifier]
    fail_next: Callable[[int, str], None]  # kind: "429" (Retry-After 7) | "500" | "timeout" | "4xx"
    observed: Callable[[str], list[str]]  # the steps the server accepted for an incident, in order
    requests: Callable[[], int]  # requests the server answered, successful or not
    wire: Callable[[], str]  # everything the server received, for leak checks
    secrets: tuple[str, ...]
    incident_channels: tuple[str, ...]


def _slack(server: FakeSlack) -> Harness:
    def fail(n: int, kind: str) -> None:
        if kind == "429":
            server.fail_next(n, status=429, retry_after=7)
        elif kind == "500":
            server.fail_next(n, status=500)
        elif kind == "timeout":
            server.stall_next(n, STALL_S)
        else:
            server.fail_next(n, error="channel_not_found")

    def observed(incident_id: str) -> list[str]:
        steps = {"Decision": "opened", "Acknowledged": "acknowledged", "Resolved": "resolved"}
        out = []
        for m in server.top_level():
            if f"`{incident_id}`" in str(m.blocks) or any(f"`{incident_id}`" in str(e) for e in m.edits):
                for reply in server.thread(m.ts):
                    out += [v for k, v in steps.items() if k in reply.text]
        return out

    return Harness(
        name="slack",
        make=lambda: slack_notifier(server, timeout=CLIENT_TIMEOUT_S),
        fail_next=fail,
        observed=observed,
        requests=lambda: len(server.calls),
        wire=lambda: repr([(c.method, c.args) for c in server.calls]),
        secrets=(SLACK_TOKEN, SIGNING_SECRET),
        incident_channels=("slack:#incidents",),
    )


def _pagerduty(server: FakePagerDuty, make: Callable[[], Notifier]) -> Harness:
    def fail(n: int, kind: str) -> None:
        if kind == "429":
            server.fail_next(n, status=429, retry_after=7)
        elif kind == "500":
            server.fail_next(n, status=500)
        elif kind == "timeout":
            server.stall_next(n, STALL_S)
        else:
            server.fail_next(n, status=400)

    names = {"trigger": "opened", "acknowledge": "acknowledged", "resolve": "resolved"}
    return Harness(
        name="pagerduty",
        make=make,
        fail_next=fail,
        observed=lambda i: [names[e["event_action"]] for e in server.events if e["dedup_key"] == f"rollbackd-{i}"],
        requests=lambda: len(server.requests),
        wire=lambda: repr(list(server.events)),
        secrets=(ROUTING_KEY,),
        incident_channels=("pagerduty:checkout",),
    )


@pytest.fixture(params=["slack", "pagerduty"])
def harness(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Harness]:
    if request.param == "slack":
        yield _slack(request.getfixturevalue("fake_slack"))
        return
    server: FakePagerDuty = request.getfixturevalue("fake_pagerduty")
    files = request.getfixturevalue("tls")
    made: list[PagerDutyNotifier] = []

    def make() -> Notifier:
        made.append(pagerduty_notifier(server, files, clock, timeout_s=CLIENT_TIMEOUT_S))
        return made[-1]

    yield _pagerduty(server, make)
    for notifier in made:
        notifier.close()
