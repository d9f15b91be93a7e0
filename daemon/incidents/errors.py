"""Errors of the incidents stage, mapped to HTTP statuses by ``api.incidents``.

None of them carries an approval code: messages name the approver, the
incident and what was wrong, never what was typed.
"""

from __future__ import annotations

from datetime import datetime

from daemon.errors import PermanentError, TemporaryError


class WrongCodeError(PermanentError):
    """Wrong code (or unknown approver). ``remaining``: tries left before the lockout (HTTP 403)."""

    def __init__(self, message: str, *, remaining: int) -> None:
        super().__init__(message, reason="bad_code")
        self.remaining = remaining


class ApproverLockedError(PermanentError):
    """Too many wrong codes: the approver is locked out until ``until`` (HTTP 423)."""

    def __init__(self, approver: str, until: datetime) -> None:
        super().__init__(f"approver {approver} is locked out until {until.isoformat()}", reason="locked")
        self.until = until


class NotPermittedError(PermanentError):
    """The code is right but the approver or role does not fit this incident (HTTP 403)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="not_permitted")


class RateLimitedError(TemporaryError):
    """Too many failed attempts across all approvers (HTTP 429)."""

    def __init__(self, delay: float) -> None:
        super().__init__("too many failed approval attempts; retry later", reason="rate_limited", delay=delay)


class IncidentNotFoundError(PermanentError):
    def __init__(self, incident_id: str) -> None:
        super().__init__(f"no incident {incident_id}", reason="not_found")


class InvalidTransitionError(PermanentError):
    """The event does not apply in the incident's state (HTTP 409); the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="invalid_transition")


class ConcurrentUpdateError(TemporaryError):
    """Another replica changed the incident first; reload and try again."""

    def __init__(self, incident_id: str) -> None:
        super().__init__(f"incident {incident_id} changed concurrently", reason="conflict", delay=0.05)
