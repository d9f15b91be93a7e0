"""Block Kit for Slack: the incident message, its thread replies and the approval modal.

Pure functions from ``IncidentView`` to Slack payloads, so layout is tested
without a network. The incident message answers, at a glance: what broke,
what rollbackd decided and why, and what it is waiting for. Buttons carry the
incident id in their ``action_id`` (``rollbackd:<verb>:<incident_id>``); the
approval modal asks for the code in a ``plain_text_input`` so it never
appears in a message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from daemon.model import NotificationKind, Severity
from daemon.notify.record import IncidentView

ACTION_PREFIX = "rollbackd"
VERBS = ("ack", "approve", "reject")
APPROVE_CALLBACK = "rollbackd:approve"
CODE_BLOCK = "code"
CODE_ACTION = "code"

_ICON = {Severity.P0: ":red_circle:", Severity.P1: ":large_orange_circle:", Severity.P2: ":large_yellow_circle:"}
_TERMINAL = {"resolved", "failed", "rejected", "expired", "closed"}


def action_id(verb: str, incident_id: str) -> str:
    return f"{ACTION_PREFIX}:{verb}:{incident_id}"


def parse_action_id(value: str) -> tuple[str, str] | None:
    """(verb, incident_id) for one of our buttons, None for anything else."""
    prefix, _, rest = value.partition(":")
    verb, _, incident_id = rest.partition(":")
    if prefix != ACTION_PREFIX or verb not in VERBS or not incident_id:
        return None
    return verb, incident_id


def _text(s: str, limit: int = 2900) -> str:
    # Section text is limited to 3000 characters by Slack.
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def measured_text(measured: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} = {_fmt_value(v)}" for k, v in sorted(measured.items()))


def waiting_for(view: IncidentView) -> str:
    """What rollbackd needs next, in words a responder acts on."""
    if not view.is_open or view.state in _TERMINAL:
        return "nothing: the incident is closed"
    if view.awaiting_approval:
        roles = [f"{n} x {r}" if n > 1 else r for r, n in view.missing_roles.items()]
        joiner = " or " if view.quorum == "any_of" else " and "
        return "approval from " + (joiner.join(roles) or "an approver")
    if view.state in ("rolling_back", "approved"):
        return "the rollback to finish"
    if view.state == "verifying":
        return "verification of the rollback"
    if view.acknowledged_by is None:
        return "a responder to acknowledge"
    return "the alert to resolve"


def main_message(view: IncidentView, incident_url: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) of the one message per incident."""
    icon = _ICON.get(view.severity, ":white_circle:")
    headline = f"{icon} [{view.severity.value}] {view.summary}"
    fields = [
        f"*State*\n{view.state.replace('_', ' ')}",
        f"*Targets*\n{', '.join(view.targets) or '—'}",
        f"*Rule*\n{view.rule or '—'}",
        f"*Decision*\n{view.action.replace('_', ' ') or '—'}",
    ]
    if view.acknowledged_by:
        fields.append(f"*Acknowledged by*\n{view.acknowledged_by}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _text(headline, 150)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    why = view.reason or "no reason recorded"
    if view.measured:
        why += f"\nMeasured: {measured_text(view.measured)}"
    if view.to_revision is not None:
        why += f"\nRollback to revision {view.to_revision}"
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _text(f"*Why:* {why}")}})
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Waiting for:* {waiting_for(view)}"}})
    buttons = _buttons(view)
    if buttons:
        blocks.append({"type": "actions", "block_id": f"rollbackd:{view.incident_id}", "elements": buttons})
    context = f"incident `{view.incident_id}`"
    if incident_url:
        context += f" · <{incident_url}|decision record>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return _text(f"[{view.severity.value}] {view.summary} — {view.state}", 3000), blocks


def _buttons(view: IncidentView) -> list[dict[str, Any]]:
    if not view.is_open or view.state in _TERMINAL:
        return []
    out: list[dict[str, Any]] = []
    if view.acknowledged_by is None:
        out.append(_button("Acknowledge", "ack", view.incident_id))
    if view.awaiting_approval:
        out.append(_button("Approve", "approve", view.incident_id, style="primary"))
        out.append(_button("Reject", "reject", view.incident_id, style="danger"))
    return out


def _button(label: str, verb: str, incident_id: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id(verb, incident_id),
        "value": incident_id,
    }
    if style:
        button["style"] = style
    return button


def _opened(view: IncidentView) -> str:
    text = f":mag: *Decision:* rule `{view.rule or '?'}` → {view.action.replace('_', ' ') or 'notify'}"
    if view.reason:
        text += f"\n{view.reason}"
    if view.measured:
        text += f"\nMeasured: {measured_text(view.measured)}"
    return text


def _approvers(view: IncidentView, verdict: str) -> str:
    return ", ".join(f"{a.approver} ({a.role})" for a in view.approvals if a.verdict == verdict)


def _rolling_back(view: IncidentView) -> str:
    rev = f" to revision {view.to_revision}" if view.to_revision is not None else ""
    return f":rewind: Rolling back {', '.join(view.targets) or 'the targets'}{rev}."


_REPLIES: dict[NotificationKind, Callable[[IncidentView], str]] = {
    NotificationKind.OPENED: _opened,
    NotificationKind.AWAITING_APPROVAL: lambda v: f":hourglass: Waiting for {waiting_for(v)}.",
    NotificationKind.APPROVED: lambda v: f":white_check_mark: Approved by {_approvers(v, 'approve') or 'quorum'}.",
    NotificationKind.REJECTED: lambda v: (
        f":no_entry: Rejected by {_approvers(v, 'reject') or 'an approver'}; no rollback will run."
    ),
    NotificationKind.ACKNOWLEDGED: lambda v: f":eyes: Acknowledged by {v.acknowledged_by or 'a responder'}.",
    NotificationKind.ROLLING_BACK: _rolling_back,
    NotificationKind.VERIFYING: lambda v: f":stethoscope: Rollback applied; verifying. {v.verify_detail}".rstrip(),
    NotificationKind.RESOLVED: lambda v: f":large_green_circle: Resolved. {v.verify_detail}".rstrip(),
    NotificationKind.FAILED: lambda v: f":x: Failed: {v.verify_detail or v.summary}. A human must act.",
}


def thread_reply(view: IncidentView) -> str:
    """One reply per step, posted in the incident message's thread."""
    render = _REPLIES.get(view.kind)
    if render is None:
        return _text(f":information_source: {view.kind.value.replace('_', ' ').capitalize()}: {view.summary}")
    return _text(render(view))


def approval_modal(incident_id: str, summary: str) -> dict[str, Any]:
    """The modal the Approve button opens; the code is typed here and sent only to rollbackd."""
    return {
        "type": "modal",
        "callback_id": APPROVE_CALLBACK,
        "private_metadata": incident_id,
        "title": {"type": "plain_text", "text": "Approve rollback"},
        "submit": {"type": "plain_text", "text": "Approve"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _text(f"*{summary}*\nincident `{incident_id}`")}},
            {
                "type": "input",
                "block_id": CODE_BLOCK,
                "label": {"type": "plain_text", "text": "Your approval code"},
                "element": {"type": "plain_text_input", "action_id": CODE_ACTION, "max_length": 128},
            },
        ],
    }
