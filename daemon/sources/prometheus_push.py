"""The alerts Prometheus POSTs to an Alertmanager (``<prefix>/api/v2/alerts``), parsed at the edge.

Lets a Prometheus list rollbackd under ``alerting.alertmanagers`` and skip
Alertmanager. The body is a JSON array of postable alerts (Prometheus sends up
to 64 per request). There is no status field: like Alertmanager, an alert whose
``endsAt`` lies in the past is resolved, anything else is firing. There is no
fingerprint either: we compute Alertmanager's, so the same alert arriving
through Alertmanager and straight from Prometheus is one alert.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from daemon.errors import InputError
from daemon.model import Alert, AlertStatus, frozen_map
from daemon.sources.common import annotation_value, fingerprint, optional_utc, rejection, utc
from daemon.target import target_from_labels

SOURCE = "prometheus"
MAX_BATCH = 64  # Prometheus' notifier batch size; more in one request is not Prometheus talking


class PostableAlert(BaseModel):
    """One alert as Alertmanager's v2 API accepts it (``models.PostableAlert``)."""

    # Someone else's format: ignore unknown fields, be strict on known ones.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, populate_by_name=True)

    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: AwareDatetime | None = Field(None, alias="startsAt")
    ends_at: AwareDatetime | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")


_BATCH = TypeAdapter(list[PostableAlert])


def to_alert(item: PostableAlert, index: int, now: datetime) -> Alert:
    """Normalise one pushed alert as Alertmanager would: missing ``startsAt`` is now, past ``endsAt`` resolves."""
    name = item.labels.get("alertname", "")
    if not name:
        raise InputError(f"prometheus alerts: {index}.labels.alertname: missing or empty")
    starts_at = optional_utc(item.starts_at) or utc(now)
    ends_at = optional_utc(item.ends_at)
    resolved = ends_at is not None and ends_at <= now
    return Alert(
        name=name,
        status=AlertStatus.RESOLVED if resolved else AlertStatus.FIRING,
        labels=frozen_map(item.labels),
        annotations=frozen_map(item.annotations),
        starts_at=starts_at,
        ends_at=ends_at,
        fingerprint=fingerprint(item.labels),
        source=SOURCE,
        target=target_from_labels(item.labels),
        generator_url=item.generator_url,
        value=annotation_value(item.annotations),
    )


def parse_alerts(body: bytes | str, now: datetime) -> tuple[Alert, ...]:
    """Parse a raw ``POST /api/v2/alerts`` body; raise ``InputError`` naming the field for bad input."""
    try:
        items = _BATCH.validate_json(body)
    except ValidationError as exc:
        raise rejection(exc, what="prometheus alerts") from None
    if len(items) > MAX_BATCH:
        raise InputError(
            f"prometheus alerts: (body): {len(items)} alerts in one request, at most {MAX_BATCH} accepted",
            reason="batch_too_large",
        )
    return tuple(to_alert(item, i, now) for i, item in enumerate(items))
