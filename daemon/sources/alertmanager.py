"""Alertmanager's webhook payload (version 4), parsed at the edge into ``daemon.model.Alert``.

First stage of the pipeline for alerts routed through Alertmanager: the
``/webhooks/alertmanager`` endpoint hands the raw body here, gets frozen
``Alert`` values back (source ``alertmanager``) and writes them to the inbox.
The models mirror Alertmanager's ``notify/webhook.Message`` and
``template.Data``: unknown fields are ignored (the format is Alertmanager's and
may grow) but every known field is type-checked strictly, and a payload whose
``version`` is not ``"4"`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from daemon.errors import InputError
from daemon.model import Alert, AlertStatus, frozen_map
from daemon.sources.common import annotation_value, fingerprint, optional_utc, rejection, utc
from daemon.target import target_from_labels

SOURCE = "alertmanager"
SUPPORTED_VERSION = "4"


class _Tolerant(BaseModel):
    # Someone else's format: ignore what we do not know, be strict about what we do.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, populate_by_name=True)


class WebhookAlert(_Tolerant):
    """One alert of the group (``template.Alert``)."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: AwareDatetime = Field(alias="startsAt")
    ends_at: AwareDatetime | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = ""


class WebhookMessage(_Tolerant):
    """The whole notification Alertmanager POSTs to a webhook receiver."""

    version: str
    group_key: str = Field("", alias="groupKey")
    truncated_alerts: int = Field(0, ge=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    alerts: list[WebhookAlert]


@dataclass(frozen=True, slots=True)
class WebhookBatch:
    """What the receiver needs from one notification: the alerts and the group's bookkeeping."""

    alerts: tuple[Alert, ...]
    group_key: str
    receiver: str
    truncated_alerts: int


class _VersionProbe(_Tolerant):
    version: str


def _check_version(body: bytes) -> None:
    """Refuse another payload version before its fields are judged by version 4's rules."""
    try:
        probe = _VersionProbe.model_validate_json(body)
    except ValidationError as exc:
        if any(err["loc"] == ("version",) and err["type"] != "missing" for err in exc.errors()):
            raise rejection(exc, what="alertmanager webhook") from None
        return  # malformed or missing version: the full parse reports it with everything else
    if probe.version != SUPPORTED_VERSION:
        raise InputError(
            f"alertmanager webhook: version: expected {SUPPORTED_VERSION!r}, got {probe.version!r}",
            reason="wrong_version",
        )


def to_alert(item: WebhookAlert, index: int) -> Alert:
    """Normalise one webhook alert; ``index`` names it in a rejection."""
    name = item.labels.get("alertname", "")
    if not name:
        raise InputError(f"alertmanager webhook: alerts.{index}.labels.alertname: missing or empty")
    return Alert(
        name=name,
        status=AlertStatus(item.status),
        labels=frozen_map(item.labels),
        annotations=frozen_map(item.annotations),
        starts_at=utc(item.starts_at),
        ends_at=optional_utc(item.ends_at),
        fingerprint=item.fingerprint or fingerprint(item.labels),
        source=SOURCE,
        target=target_from_labels(item.labels),
        generator_url=item.generator_url,
        value=annotation_value(item.annotations),
    )


def parse_webhook(body: bytes | str) -> WebhookBatch:
    """Parse a raw webhook body; raise ``InputError`` naming the field for anything malformed."""
    raw = body.encode() if isinstance(body, str) else body
    try:
        # One pass decodes and validates a good body; only a refused one is read again, by the probe.
        message = WebhookMessage.model_validate_json(raw)
    except ValidationError as exc:
        _check_version(raw)  # another version is refused as such, not by version 4's rules
        raise rejection(exc, what="alertmanager webhook") from None
    if message.version != SUPPORTED_VERSION:
        raise InputError(
            f"alertmanager webhook: version: expected {SUPPORTED_VERSION!r}, got {message.version!r}",
            reason="wrong_version",
        )
    alerts = tuple(to_alert(a, i) for i, a in enumerate(message.alerts))
    return WebhookBatch(
        alerts=alerts,
        group_key=message.group_key,
        receiver=message.receiver,
        truncated_alerts=message.truncated_alerts,
    )
