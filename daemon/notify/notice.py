"""One outbox notification as the notifiers read it: the step, and the incident's typed decision record.

``incidents.write`` queues each notification with ``store.outbox.event_payload``:
the step's kind, severity, summary and channels, plus the decision record's
JSON (``IncidentRecord.to_json``). ``Notice.from_payload`` reads that back with
the record type's own ``from_json`` — there is no second parser of the record
here — and every renderer (``slack_render``, ``pagerduty``) works from the
``Notice``. A payload that is not one is a permanent failure of the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.errors import PermanentError
from daemon.incidents.record import IncidentRecord
from daemon.model import NotificationKind, Severity


@dataclass(frozen=True, slots=True)
class Notice:
    """What a notifier needs to say about one incident at one step."""

    kind: NotificationKind
    severity: Severity
    summary: str
    channels: tuple[str, ...]
    outbox_id: int | None
    record: IncidentRecord

    @property
    def incident_id(self) -> str:
        return self.record.id

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Notice:
        """Parse an outbox payload; raises PermanentError (reason ``bad_payload``) for anything else."""
        try:
            record = IncidentRecord.from_json(payload["incident"])
            kind = NotificationKind(payload["kind"])
            severity = Severity(payload["severity"])
            channels = tuple(str(c) for c in payload.get("channels", ()))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise PermanentError(f"outbox payload is malformed: {exc!r}", reason="bad_payload") from None
        outbox_id = payload.get("outbox_id")
        return cls(
            kind=kind,
            severity=severity,
            summary=str(payload.get("summary") or f"incident {record.id}"),
            channels=channels,
            outbox_id=outbox_id if isinstance(outbox_id, int) else None,
            record=record,
        )
