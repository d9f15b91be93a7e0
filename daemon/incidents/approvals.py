"""Approval codes: who may approve, checking a code without leaking it, lockout and rate limits.

``incidents.people`` and ``incidents.intake`` (break-glass) call
``Approvers.verify`` before an approval, a rejection or a break-glass rollback
becomes an event for the state machine. A code is a TOTP
(pyotp, one step of clock skew either way, never the same step twice) or a
personal code checked against its argon2 hash. Failures are counted per
approver in ``ApproverLockRow`` (persisted, so a restart does not reset them)
and globally in memory. The code is never logged, stored, echoed or returned:
it lives only in the arguments of ``verify``.
"""

from __future__ import annotations

import asyncio
import hmac
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select

from daemon.clock import Clock
from daemon.config import ApproverSettings
from daemon.deploys import DeployEvent
from daemon.errors import ConfigError
from daemon.incidents.errors import ApproverLockedError, NotPermittedError, RateLimitedError, WrongCodeError
from daemon.logs import get_logger
from daemon.metrics import APPROVAL_ATTEMPTS
from daemon.model import ApprovalRequirement
from daemon.store.db import Store
from daemon.store.tables import ApproverLockRow

log = get_logger(__name__)

MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
GLOBAL_FAILURES_PER_MINUTE = 20
_HASHER = PasswordHasher()
# Verified when the approver is unknown, so a wrong name costs as much time as a wrong code.
_DUMMY_HASH = _HASHER.hash("rollbackd-dummy-code")


@dataclass(frozen=True, slots=True)
class Approver:
    """An approver as configured, with the secret read once at start-up."""

    name: str
    roles: frozenset[str]
    totp: pyotp.TOTP | None
    code_hash: str | None
    slack_user_id: str | None = None
    pagerduty_user_id: str | None = None
    deploy_authors: frozenset[str] = frozenset()

    def authored(self, author: str) -> bool:
        """Whether a deploy event's ``author`` is this person (their name or a configured alias, any case)."""
        who = author.strip().casefold()
        return bool(who) and who in {self.name.casefold(), *(a.casefold() for a in self.deploy_authors)}


def load_approvers(settings: list[ApproverSettings]) -> dict[str, Approver]:
    """Read every approver's secret; raise ConfigError naming the approver (never the secret)."""
    found: dict[str, Approver] = {}
    for a in settings:
        if (a.totp_secret is None) == (a.code_hash is None):
            raise ConfigError(f"approvers.{a.name}: give exactly one of totp_secret or code_hash")
        totp = pyotp.TOTP(a.totp_secret.read()) if a.totp_secret else None
        code_hash = a.code_hash.read() if a.code_hash else None
        if code_hash is not None and not code_hash.startswith("$argon2"):
            raise ConfigError(f"approvers.{a.name}.code_hash: expected an argon2 hash ($argon2id$...)")
        found[a.name] = Approver(
            a.name, frozenset(a.roles), totp, code_hash, a.slack_user_id, a.pagerduty_user_id,
            frozenset(a.deploy_authors),
        )  # fmt: skip
    return found


class Approvers:
    """Verifies approval codes with a persisted per-approver lockout and a global rate limit."""

    def __init__(self, store: Store, clock: Clock, approvers: list[ApproverSettings]) -> None:
        self._store = store
        self._clock = clock
        self.by_name: Mapping[str, Approver] = load_approvers(approvers)
        self._recent_failures: deque[datetime] = deque()

    def by_slack_user(self, user_id: str) -> Approver | None:
        return next((a for a in self.by_name.values() if a.slack_user_id == user_id), None)

    def by_pagerduty_user(self, user_id: str) -> Approver | None:
        return next((a for a in self.by_name.values() if a.pagerduty_user_id == user_id), None)

    def _rate_limit(self, now: datetime) -> None:
        while self._recent_failures and now - self._recent_failures[0] > timedelta(minutes=1):
            self._recent_failures.popleft()
        if len(self._recent_failures) >= GLOBAL_FAILURES_PER_MINUTE:
            wait = 60 - (now - self._recent_failures[0]).total_seconds()
            APPROVAL_ATTEMPTS.labels(outcome="rate_limited").inc()
            raise RateLimitedError(max(1.0, wait))

    async def verify(self, name: str, code: str) -> Approver:
        """The approver if ``code`` is theirs now; else WrongCodeError / ApproverLockedError / RateLimitedError."""
        now = self._clock.now()
        self._rate_limit(now)
        approver = self.by_name.get(name)
        async with self._store.transaction() as s:
            lock = await s.get(ApproverLockRow, name, with_for_update=True) if approver else None
            if lock is None and approver is not None:
                lock = ApproverLockRow(approver=name, failures=0)
                s.add(lock)
            until = lock.locked_until if lock else None
            if lock is not None and until is not None and until > now:
                APPROVAL_ATTEMPTS.labels(outcome="locked").inc()
                raise ApproverLockedError(name, until)
            step = await self._check(approver, code, now, lock.last_totp_step if lock else None)
            if approver is not None and lock is not None and step is not None:
                lock.failures, lock.locked_until = 0, None
                if step >= 0:
                    lock.last_totp_step = step
                APPROVAL_ATTEMPTS.labels(outcome="ok").inc()
                return approver
            self._recent_failures.append(now)
            APPROVAL_ATTEMPTS.labels(outcome="bad_code").inc()
            if lock is None:
                log.warning("approval refused", approver=name, why="unknown approver")
                raise WrongCodeError(f"unknown approver {name} or wrong code", remaining=0)
            lock.failures = (lock.failures or 0) + 1
            lock.last_failure_at = now
            remaining = max(0, MAX_FAILURES - lock.failures)
            if remaining == 0:
                lock.locked_until = now + LOCKOUT
                lock.failures = 0
            log.warning("approval refused", approver=name, why="wrong code", remaining=remaining)
        raise WrongCodeError(f"wrong approval code for {name}; {remaining} tries left", remaining=remaining)

    async def _check(self, approver: Approver | None, code: str, now: datetime, last_step: int | None) -> int | None:
        """The TOTP step that matched (-1 for an argon2 code), None if the code is wrong."""
        if approver is None or approver.totp is None:
            stored = approver.code_hash if approver is not None and approver.code_hash else _DUMMY_HASH
            ok = await asyncio.to_thread(_argon2_ok, stored, code)
            return -1 if ok and approver is not None else None
        current = approver.totp.timecode(now)
        matched: int | None = None
        # Compare every step in the window in constant time; no early exit.
        for step in (current - 1, current, current + 1):
            if hmac.compare_digest(approver.totp.generate_otp(step).encode(), code.encode()):
                matched = step
        if matched is None or (last_step is not None and matched <= last_step):
            return None  # wrong, or a replay of a step already used
        return matched


def _argon2_ok(stored: str, code: str) -> bool:
    try:
        return _HASHER.verify(stored, code)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_not_author(approver: Approver, requirement: ApprovalRequirement, deploy: DeployEvent | None) -> None:
    """NotPermittedError when the rule forbids the deploy's author to approve its rollback (they may still reject)."""
    if requirement.forbid_author_approval and deploy is not None and approver.authored(deploy.author):
        APPROVAL_ATTEMPTS.labels(outcome="author_refused").inc()
        what = deploy.version or deploy.image or deploy.event_id
        raise NotPermittedError(
            f"{approver.name} authored the deploy being rolled back ({what}); this rule forbids approving "
            "a rollback of one's own deploy (forbid_author_approval)"
        )


def pick_role(
    approver: Approver, requirement: ApprovalRequirement, missing: Mapping[str, int], role: str | None
) -> str:
    """The role this approval counts for: the one asked for, else the first still-missing role the approver holds."""
    if role is not None:
        if role not in approver.roles:
            raise NotPermittedError(f"{approver.name} does not hold the role {role!r}")
        if requirement.roles and role not in requirement.roles:
            raise NotPermittedError(f"role {role!r} is not one this incident needs ({', '.join(requirement.roles)})")
        return role
    if not requirement.roles:
        return sorted(approver.roles)[0] if approver.roles else "approver"
    for wanted in missing or requirement.roles:
        if wanted in approver.roles:
            return wanted
    raise NotPermittedError(f"{approver.name} holds none of the roles this incident still needs ({', '.join(missing)})")


def veto_role(
    approver: Approver, requirement: ApprovalRequirement, missing: Mapping[str, int], role: str | None
) -> str:
    """The role a rejection is made under: one the incident needs and the approver holds, covered or not.

    Rejecting stops an action — the fail-safe direction — so an approver whose role
    the approvals so far already cover (or who approved earlier) may still reject.
    """
    if role is not None or not requirement.roles:
        return pick_role(approver, requirement, missing, role)
    held = [r for r in (*missing, *requirement.roles) if r in approver.roles]
    if not held:
        needed = ", ".join(requirement.roles)
        raise NotPermittedError(f"{approver.name} holds none of the roles this incident needs ({needed})")
    return held[0]


async def lock_rows(store: Store) -> list[ApproverLockRow]:
    """For operators and tests: the lockout table."""
    async with store.transaction() as s:
        return list((await s.scalars(select(ApproverLockRow))).all())
