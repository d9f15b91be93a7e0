"""The schema: one table per thing the daemon must not forget across a restart.

Free-form details (decision records, payloads) are JSON columns so the record
can grow without a migration; anything queried or constrained is a column.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from daemon.store.types import UtcDateTime

OPEN_GROUP_INDEX = "ux_incidents_open_group"
ONE_APPROVAL_INDEX = "ux_approvals_one_approval"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: UtcDateTime(),  # aware UTC in and out, on SQLite too
    }


class InboxRow(Base):
    """Every accepted alert or deploy event, written before it is acknowledged to the sender."""

    __tablename__ = "inbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(512), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # alert | deploy
    source: Mapped[str] = mapped_column(String(32))
    partition_key: Mapped[str] = mapped_column(String(255))  # per-key ordering
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # A dispatcher's lease on the row (``ingest.dispatcher``): claimed rows are skipped by the others
    # until ``claimed_until`` passes, so a row is handled by one dispatcher whatever the commit order.
    claimed_by: Mapped[str | None] = mapped_column(String(255), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)
    __table_args__ = (Index("ix_inbox_pending", "processed_at", "id"),)


class DeployRow(Base):
    """Deployment history from Kafka: what ran where, when, and whether it migrated data."""

    __tablename__ = "deploy_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    service: Mapped[str] = mapped_column(String(255), index=True)
    namespace: Mapped[str] = mapped_column(String(255))
    deployment: Mapped[str] = mapped_column(String(255))  # the workload's name, of any kind
    workload_kind: Mapped[str] = mapped_column(String(16), default="deployment", server_default="deployment")
    revision: Mapped[int | None] = mapped_column(Integer, default=None)
    image: Mapped[str] = mapped_column(String(512), default="")
    version: Mapped[str] = mapped_column(String(255), default="")
    commit: Mapped[str] = mapped_column(String(64), default="")
    author: Mapped[str] = mapped_column(String(255), default="")
    migration: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime]
    __table_args__ = (Index("ix_deploy_target_at", "namespace", "deployment", "at"),)


class IncidentRow(Base):
    """One incident: the persisted state of the machine in ``incidents.machine``."""

    __tablename__ = "incidents"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    group_key: Mapped[str] = mapped_column(String(512), index=True)
    rule: Mapped[str] = mapped_column(String(255), index=True)
    severity: Mapped[str] = mapped_column(String(4))
    state: Mapped[str] = mapped_column(String(32), index=True)
    open: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(255), default=None)
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    decision: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(Integer, default=1)  # optimistic concurrency between replicas
    # At most one open incident per group, whatever number of writers: the second opener joins the first.
    __table_args__ = (
        Index(
            OPEN_GROUP_INDEX, "group_key", unique=True,
            sqlite_where=text("open = 1"), postgresql_where=text("open"),
        ),
    )  # fmt: skip


class IncidentAlertRow(Base):
    """The alerts that joined an incident, with their measured values."""

    __tablename__ = "incident_alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    starts_at: Mapped[datetime]
    value: Mapped[float | None] = mapped_column(Float, default=None)
    alert: Mapped[dict[str, Any]]
    at: Mapped[datetime]


class ApprovalRow(Base):
    """One approver's verdict for one role on one incident."""

    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    approver: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(255))
    verdict: Mapped[str] = mapped_column(String(16))  # approve | reject
    via: Mapped[str] = mapped_column(String(32))  # cli | api | slack
    comment: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime]
    # One approval per approver and role, so a double submit never counts twice. A rejection (it
    # ends the incident) is not bound by it: an approver who approved earlier may still reject.
    __table_args__ = (
        Index(
            ONE_APPROVAL_INDEX, "incident_id", "approver", "role", unique=True,
            sqlite_where=text("verdict = 'approve'"), postgresql_where=text("verdict = 'approve'"),
        ),
    )  # fmt: skip


class ApproverLockRow(Base):
    """Failed approval-code attempts per approver, for the lockout."""

    __tablename__ = "approver_locks"
    approver: Mapped[str] = mapped_column(String(255), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    last_failure_at: Mapped[datetime | None] = mapped_column(default=None)
    last_totp_step: Mapped[int | None] = mapped_column(Integer, default=None)  # no TOTP replay


class AuditRow(Base):
    """Append-only: who or what did what to which incident, when and why."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]]


class TimerRow(Base):
    """A deadline that must fire even if the daemon restarts in between."""

    __tablename__ = "timers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    due_at: Mapped[datetime] = mapped_column(index=True)
    fired_at: Mapped[datetime | None] = mapped_column(default=None)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (UniqueConstraint("incident_id", "kind"),)


class OutboxRow(Base):
    """A notification, written with the change that caused it and delivered by a worker."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    channel: Mapped[str] = mapped_column(String(32))  # slack | pagerduty | kafka
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    __table_args__ = (Index("ix_outbox_due", "state", "next_attempt_at"),)


class NotificationRefRow(Base):
    """Where an incident's message lives in a channel (Slack ts, PagerDuty dedup key)."""

    __tablename__ = "notification_refs"
    incident_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    ref: Mapped[dict[str, Any]]


class RollbackIntentRow(Base):
    """Persisted before the patch, so a crash never leads to a second undo for the same intent."""

    __tablename__ = "rollback_intents"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # idempotency key
    incident_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    namespace: Mapped[str] = mapped_column(String(255))
    deployment: Mapped[str] = mapped_column(String(255))  # the workload's name, of any kind
    kind: Mapped[str] = mapped_column(String(16), default="deployment", server_default="deployment")
    from_revision: Mapped[int | None] = mapped_column(Integer, default=None)
    to_revision: Mapped[int | None] = mapped_column(Integer, default=None)
    state: Mapped[str] = mapped_column(String(16))  # planned | applied | ready | verified | failed | interrupted
    automatic: Mapped[bool] = mapped_column(Boolean, default=True)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    __table_args__ = (Index("ix_intent_target", "namespace", "deployment", "created_at"),)


class WebSessionRow(Base):
    """A signed-in responder on the incident pages (``daemon.web.sessions``), shared by every replica.

    Keyed by the SHA-256 of the cookie's secret, so the table alone signs no one in.
    """

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(255))
    via: Mapped[str] = mapped_column(String(16))  # token | proxy
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)  # the absolute end; idle ends come sooner


class ReceiptRow(Base):
    """Webhook deliveries already handled (PagerDuty webhook ids, Slack action ids)."""

    __tablename__ = "receipts"
    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    receipt_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    at: Mapped[datetime]


class PauseRow(Base):
    """A pause of automated rollback (``control.pauses``): what it covers, who set it, why, until when."""

    __tablename__ = "automation_pauses"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))  # all | namespace | deployment | rule
    value: Mapped[str] = mapped_column(String(512), default="")
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    until: Mapped[datetime]
    resumed_at: Mapped[datetime | None] = mapped_column(default=None)
    resumed_by: Mapped[str | None] = mapped_column(String(255), default=None)
    __table_args__ = (Index("ix_automation_pauses_active", "resumed_at", "until"),)


class HoldRow(Base):
    """An automated rollback a guard held (``control.guard``): which guard, why, and what it would have done."""

    __tablename__ = "automation_holds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(32), index=True)
    rule: Mapped[str] = mapped_column(String(255))
    guard: Mapped[str] = mapped_column(String(32))  # pause | freeze | shadow | one_attempt
    detail: Mapped[str] = mapped_column(Text)
    would: Mapped[dict[str, Any]]  # targets and, for a shadow dry run, the revisions it would have moved
    at: Mapped[datetime]
    __table_args__ = (Index("ix_automation_holds_guard_at", "guard", "at"),)
