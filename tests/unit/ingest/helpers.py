"""Values for the ingest tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.deploys import DeployEvent, DeployKind
from daemon.model import Alert, AlertStatus, frozen_map
from daemon.sources.common import fingerprint
from daemon.target import target_from_labels

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def alert(
    name: str = "HighErrorRate",
    *,
    deployment: str | None = "web",
    status: AlertStatus = AlertStatus.FIRING,
    starts_min: int = 0,
    **labels: str,
) -> Alert:
    lab = {"alertname": name, **labels}
    if deployment:
        lab.update(namespace="shop", deployment=deployment)
    return Alert(
        name=name,
        status=status,
        labels=frozen_map(lab),
        annotations=frozen_map({}),
        starts_at=T0 + timedelta(minutes=starts_min),
        fingerprint=fingerprint(lab),
        source="alertmanager",
        target=target_from_labels(lab),
    )


def deploy(
    event_id: str = "e1", *, minutes: int = 0, deployment: str = "web", service: str = "shop-web"
) -> DeployEvent:
    return DeployEvent(
        event_id=event_id,
        kind=DeployKind.SUCCEEDED,
        service=service,
        namespace="shop",
        deployment=deployment,
        at=T0 + timedelta(minutes=minutes),
        revision=3,
        image="img:1",
        migration=True,
    )
