"""What the Slack and PagerDuty callbacks need of incidents, and who the caller is.

``state_of(request).incidents`` implements ``IncidentResponder``; the
callback routers depend on this protocol only, so ``notify`` never imports
``incidents``. Identities from Slack and PagerDuty map to configured
approvers here; an unmapped Slack user maps to nobody (fail closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from daemon.config import ApproverSettings
from daemon.incidents.record import IncidentRecord


class IncidentResponder(Protocol):
    """The incident actions a responder can take from Slack or PagerDuty.

    Implementations raise ``daemon.errors.PermanentError`` (unknown incident, wrong
    code, locked out, not allowed) or ``TemporaryError`` (store unavailable), with a
    short ``reason``; the routers turn those into replies.
    """

    async def get(self, incident_id: str) -> IncidentRecord:
        """The decision record (``IncidentNotFoundError``, a PermanentError, if there is none)."""
        ...

    async def acknowledge(self, incident_id: str, actor: str, *, via: str) -> object: ...

    async def approve(self, incident_id: str, approver: str, code: str, *, via: str) -> object: ...

    async def reject_verified(self, incident_id: str, approver: str, *, via: str) -> object:
        """Reject for an approver whose identity the signed callback proved (no code: fail-safe)."""
        ...


def approver_by_slack_user(approvers: Sequence[ApproverSettings], user_id: str) -> ApproverSettings | None:
    for approver in approvers:
        if approver.slack_user_id and approver.slack_user_id == user_id:
            return approver
    return None


def approver_by_pagerduty_user(approvers: Sequence[ApproverSettings], user_id: str) -> ApproverSettings | None:
    for approver in approvers:
        if approver.pagerduty_user_id and approver.pagerduty_user_id == user_id:
            return approver
    return None
