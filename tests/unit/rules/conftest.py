"""Helpers for the rules tests: write rule files, build alerts and deploys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import pytest

from daemon.deploys import DeployEvent, DeployKind
from daemon.model import Alert, AlertStatus
from daemon.target import target_from_labels

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "rules"
T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)

BASE = """\
apiVersion: rollbackd/v1
roles: [CTO, Engineering Lead, Data Lead]
channels:
  slack: {slack: "#alerts"}
  pager: {pagerduty: oncall}
routing:
  P0: [pager, slack]
  P1: [pager]
  P2: [slack]
"""


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


def alert(name: str, minutes: float = 0, value: float | None = None, status: str = "firing", **labels: str) -> Alert:
    return Alert(
        name=name,
        status=AlertStatus(status),
        labels=MappingProxyType(labels),
        annotations=MappingProxyType({}),
        starts_at=T0 + timedelta(minutes=minutes),
        fingerprint=f"fp-{name}",
        source="test",
        target=target_from_labels(labels),
        value=value,
    )


def deploy(
    minutes: float,
    revision: int,
    *,
    name: str = "web",
    ns: str = "prod",
    migration: bool = False,
    kind: DeployKind = DeployKind.SUCCEEDED,
) -> DeployEvent:
    return DeployEvent(
        f"d-{name}-{revision}-{kind.value}",
        kind,
        name,
        ns,
        name,
        T0 + timedelta(minutes=minutes),
        revision=revision,
        version=f"v{revision}",
        migration=migration,
    )
