"""Fixtures for the incidents tests: approvers with real TOTP secrets and argon2 hashes, a recording executor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pyotp
import pytest
from argon2 import PasswordHasher

from daemon.clock import FakeClock
from daemon.config import ApproverSettings, SecretRef
from daemon.incidents.service import IncidentService
from daemon.model import (
    ApprovalRequirement,
    RollbackOutcome,
    RollbackRequest,
    TargetOutcome,
    TargetResult,
)
from daemon.store.db import Store

PERSONAL_CODE = "correct-horse-battery-staple-42"


@dataclass
class FakeExecutor:
    """Implements the Executor protocol: records every request, answers with a configured result."""

    result: TargetResult = TargetResult.ROLLED_BACK
    verified: bool | None = True
    requests: list[RollbackRequest] = field(default_factory=list)

    async def execute(self, req: RollbackRequest) -> RollbackOutcome:
        self.requests.append(req)
        return RollbackOutcome(
            targets=tuple(TargetOutcome(t, self.result, 5, 4, "undo to revision 4") for t in req.targets),
            verified=self.verified,
            verify_detail="error rate back under 1%" if self.verified else "error rate still 9%",
        )


@dataclass(frozen=True)
class Secrets:
    totp: dict[str, pyotp.TOTP]
    settings: list[ApproverSettings]


@pytest.fixture
def approver_secrets(tmp_path: Path) -> Secrets:
    return make_secrets(tmp_path)


def make_secrets(tmp_path: Path) -> Secrets:
    """Approvers with TOTP seeds and one argon2 personal code, as files (SecretRef)."""
    people = {"ana": ["cto"], "dan": ["data-lead"], "eve": ["eng-lead"], "sre1": ["sre"], "sre2": ["sre"]}
    totp: dict[str, pyotp.TOTP] = {}
    settings: list[ApproverSettings] = []
    for name, roles in people.items():
        seed = pyotp.random_base32()
        path = tmp_path / f"{name}.totp"
        path.write_text(seed)
        totp[name] = pyotp.TOTP(seed)
        settings.append(ApproverSettings(name=name, roles=roles, totp_secret=SecretRef(file=path)))
    hashed = tmp_path / "pam.hash"
    hashed.write_text(PasswordHasher().hash(PERSONAL_CODE))
    settings.append(
        ApproverSettings(name="pam", roles=["product-owner"], code_hash=SecretRef(file=hashed), slack_user_id="U1")
    )
    return Secrets(totp, settings)


MANUAL_QUORUM = ApprovalRequirement(MappingProxyType({"sre": 2}))


@pytest.fixture
def executor() -> FakeExecutor:
    return FakeExecutor()


@pytest.fixture
async def make_service(
    store: Store, clock: FakeClock, approver_secrets: Secrets, executor: FakeExecutor
) -> AsyncIterator[Callable[..., IncidentService]]:
    built: list[IncidentService] = []

    def make(**kwargs: object) -> IncidentService:
        service = IncidentService(
            store,
            clock,
            approver_secrets.settings,
            executor,
            manual_rollback=lambda: MANUAL_QUORUM,
            **kwargs,  # type: ignore[arg-type]
        )
        built.append(service)
        return service

    yield make
    for service in built:
        await service.close()


@pytest.fixture
def service(make_service: Callable[..., IncidentService]) -> IncidentService:
    return make_service()
