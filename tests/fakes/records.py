"""Decision records produced by the real incident path, for every test that needs one.

No record here is written by hand: ``drive_lifecycle`` runs a real
``IncidentService`` on a real store — a decision opens an incident waiting for
an engineering lead, ada acknowledges and approves it, a fake executor rolls
back and reports a verification detail — and takes the records the service
queued in the outbox, one per notification, exactly as a notifier receives
them. ``lifecycle`` (a fixture) computes that once per test session.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pyotp
import pytest
from sqlalchemy import select

from daemon.clock import FakeClock
from daemon.config import ApproverSettings, SecretRef
from daemon.deploys import DeployEvent, DeployKind
from daemon.incidents.service import IncidentService
from daemon.model import (
    ActionKind,
    Alert,
    AlertStatus,
    ApprovalRequirement,
    Decision,
    NotificationKind,
    QuorumMode,
    RollbackOutcome,
    RollbackRequest,
    Severity,
    Target,
    TargetOutcome,
    TargetResult,
)
from daemon.store.db import Store
from daemon.store.tables import OutboxRow

CHECKOUT = Target("shop", "checkout")
VERIFY_DETAIL = "error rate back to 0.4% (under 1%) for 2m"
REASON = "error rate 7.2% > 5% for 5m after deploy 42"


def checkout_decision() -> Decision:
    """What the rules decide for the checkout error-rate alert after deploy 42."""
    deploy = DeployEvent(
        event_id="deploy-42", kind=DeployKind.SUCCEEDED, service="checkout", namespace="shop",
        deployment="checkout", at=datetime(2026, 1, 1, 9, 55, tzinfo=UTC), revision=42, image="shop/checkout:2.3.0",
        version="v2.3.0", author="dev",
    )  # fmt: skip
    return Decision(
        rule="checkout-error-rate", severity=Severity.P1, action=ActionKind.ROLLBACK_WITHIN, targets=(CHECKOUT,),
        approval=ApprovalRequirement(MappingProxyType({"engineering_lead": 1}), QuorumMode.ANY_OF, 900),
        act_within_s=900, to_revision=41, channels=("slack", "pagerduty:checkout"), reason=REASON,
        measured=MappingProxyType({"error_rate": 0.072}), deploy=deploy,
    )  # fmt: skip


def checkout_alert() -> Alert:
    return Alert(
        name="CheckoutErrorRate", status=AlertStatus.FIRING,
        labels=MappingProxyType({"namespace": "shop", "deployment": "checkout"}), annotations=MappingProxyType({}),
        starts_at=datetime(2026, 1, 1, 9, 58, tzinfo=UTC), fingerprint="checkout-fp", source="alertmanager",
        target=CHECKOUT, value=0.072,
    )  # fmt: skip


@dataclass
class VerifyingExecutor:
    """The Executor protocol: rolls every target back from 42 to 41 and reports what verification found."""

    verified: bool = True
    detail: str = VERIFY_DETAIL

    async def execute(self, req: RollbackRequest) -> RollbackOutcome:
        outcomes = tuple(TargetOutcome(t, TargetResult.ROLLED_BACK, 42, 41) for t in req.targets)
        return RollbackOutcome(outcomes, verified=self.verified, verify_detail=self.detail)


def approver(folder: Path, name: str = "ada", role: str = "engineering_lead") -> tuple[ApproverSettings, pyotp.TOTP]:
    """An approver with a TOTP seed in a file, and the TOTP to make its codes."""
    seed, path = pyotp.random_base32(), folder / f"{name}.totp"
    path.write_text(seed)
    return ApproverSettings(name=name, roles=[role], totp_secret=SecretRef(file=path)), pyotp.TOTP(seed)


@dataclass(frozen=True)
class Lifecycle:
    """(kind, record JSON) of every notification one real incident queued, in order."""

    steps: tuple[tuple[NotificationKind, dict[str, Any]], ...]

    def record(self, kind: NotificationKind) -> dict[str, Any]:
        """A copy of the record the first notification of ``kind`` carried."""
        return copy.deepcopy(next(rec for k, rec in self.steps if k is kind))

    def pairs(self) -> list[tuple[NotificationKind, dict[str, Any]]]:
        return [(k, copy.deepcopy(rec)) for k, rec in self.steps]


async def drive_lifecycle(store: Store, clock: FakeClock, folder: Path) -> Lifecycle:
    """Open, acknowledge, approve, roll back, verify: the records the service queued on the way."""
    ada, totp = approver(folder)
    service = IncidentService(
        store, clock, [ada], VerifyingExecutor(), manual_rollback=lambda: ApprovalRequirement(MappingProxyType({})),
        notify_channels=("slack",),
    )  # fmt: skip
    try:
        opened = await service.on_decision(checkout_decision(), checkout_alert())
        await clock.advance(60)
        await service.acknowledge(opened.id, "ada", via="slack")
        await clock.advance(60)
        await service.approve(opened.id, "ada", totp.at(clock.now()), via="slack")
        await service.idle()
    finally:
        await service.close()
    async with store.transaction() as s:
        rows = (await s.scalars(select(OutboxRow).order_by(OutboxRow.id))).all()
    return Lifecycle(tuple((NotificationKind(r.kind), dict(r.payload["incident"])) for r in rows))


_CACHE: list[Lifecycle] = []


@pytest.fixture
async def lifecycle() -> Lifecycle:
    """The real lifecycle's records (computed on a scratch SQLite store once per session)."""
    if not _CACHE:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(f"sqlite+aiosqlite:///{Path(tmp) / 'records.sqlite'}")
            await store.upgrade()
            try:
                _CACHE.append(await drive_lifecycle(store, FakeClock(), Path(tmp)))
            finally:
                await store.close()
    return _CACHE[0]
