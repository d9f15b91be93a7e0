"""Block Kit for Slack: the incident message, its thread replies and the approval modal.

Pure functions from a ``Notice`` (the step and the incident's typed decision
record) to Slack payloads, so layout is tested without a network. The incident
message answers, at a glance: what broke, what rollbackd decided and why, what
the rollback did and what its verification found, and what it is waiting for.
Buttons carry the incident id in their ``action_id``
(``rollbackd:<verb>:<incident_id>``); the approval modal asks for the code in a
``plain_text_input`` so it never appears in a message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from daemon.incidents.record import IncidentRecord
from daemon.incidents.state import State
from daemon.model import NotificationKind, QuorumMode, Severity
from daemon.notify.notice import Notice

ACTION_PREFIX = "rollbackd"
VERBS = ("ack", "approve", "reject")
APPROVE_CALLBACK = "rollbackd:approve"
CODE_BLOCK = "code"
CODE_ACTION = "code"

_ICON = {Severity.P0: ":red_circle:", Severity.P1: ":large_orange_circle:", Severity.P2: ":large_yellow_circle:"}


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


def waiting_for(n: Notice) -> str:
    """What rollbackd needs next, in words a responder acts on."""
    r = n.record
    if not r.open:
        return "nothing: the incident is closed"
    if r.awaiting_approval:
        roles = [f"{k} x {role}" if k > 1 else role for role, k in r.missing_roles.items()]
        joiner = " or " if r.decision.approval.mode is QuorumMode.ANY_OF else " and "
        return "approval from " + (joiner.join(roles) or "an approver")
    if r.state in (State.ROLLING_BACK, State.APPROVED):
        return "the rollback to finish"
    if r.state is State.VERIFYING:
        return "verification of the rollback"
    if r.acknowledged_by is None:
        return "a responder to acknowledge"
    return "the alert to resolve"


def _action_lines(r: IncidentRecord) -> list[str]:
    return [
        f"{a.target}: {a.result.replace('_', ' ')}"
        + (f" (revision {a.from_revision} → {a.to_revision})" if None not in (a.from_revision, a.to_revision) else "")
        for a in r.actions
    ]


def outcome_text(r: IncidentRecord) -> str:
    """What the rollback did to each target and what the verification found; empty before it ran."""
    lines = _action_lines(r)
    if r.verification is not None:
        verdict = "passed" if r.verification.ok else "FAILED"
        lines.append(f"Verification {verdict}" + (f": {r.verification.detail}" if r.verification.detail else ""))
    return "\n".join(lines)


def main_message(n: Notice, incident_url: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) of the one message per incident."""
    r, d = n.record, n.record.decision
    icon = _ICON.get(n.severity, ":white_circle:")
    headline = f"{icon} [{n.severity.value}] {n.summary}"
    fields = [
        f"*State*\n{r.state.value.replace('_', ' ')}",
        f"*Targets*\n{', '.join(r.targets) or '—'}",
        f"*Rule*\n{r.rule or '—'}",
        f"*Decision*\n{d.action.value.replace('_', ' ')}",
    ]
    if r.acknowledged_by:
        fields.append(f"*Acknowledged by*\n{r.acknowledged_by}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _text(headline, 150)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    why = d.reason or "no reason recorded"
    if d.measured:
        why += f"\nMeasured: {measured_text(d.measured)}"
    if d.to_revision is not None:
        why += f"\nRollback to revision {d.to_revision}"
    blocks.append(_section(f"*Why:* {why}"))
    if outcome := outcome_text(r):
        blocks.append(_section(f"*Outcome:*\n{outcome}"))
    blocks.append(_section(f"*Waiting for:* {waiting_for(n)}"))
    buttons = _buttons(r)
    if buttons:
        blocks.append({"type": "actions", "block_id": f"rollbackd:{r.id}", "elements": buttons})
    context = f"incident `{r.id}`"
    if incident_url:
        context += f" · <{incident_url}|decision record>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return _text(f"[{n.severity.value}] {n.summary} — {r.state.value}", 3000), blocks


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _text(text)}}


def _buttons(r: IncidentRecord) -> list[dict[str, Any]]:
    if not r.open:
        return []
    out: list[dict[str, Any]] = []
    if r.acknowledged_by is None:
        out.append(_button("Acknowledge", "ack", r.id))
    if r.awaiting_approval:
        out.append(_button("Approve", "approve", r.id, style="primary"))
        out.append(_button("Reject", "reject", r.id, style="danger"))
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


def _opened(n: Notice) -> str:
    d = n.record.decision
    text = f":mag: *Decision:* rule `{d.rule or '?'}` → {d.action.value.replace('_', ' ')}"
    if d.reason:
        text += f"\n{d.reason}"
    if d.measured:
        text += f"\nMeasured: {measured_text(d.measured)}"
    return text


def _approvers(n: Notice, verdict: str) -> str:
    return ", ".join(f"{a.approver} ({a.role})" for a in n.record.verdicts(verdict))


def _rolling_back(n: Notice) -> str:
    d = n.record.decision
    rev = f" to revision {d.to_revision}" if d.to_revision is not None else ""
    return f":rewind: Rolling back {', '.join(n.record.targets) or 'the targets'}{rev}."


def _verification(n: Notice) -> str:
    v = n.record.verification
    return f"Verification {'passed' if v.ok else 'failed'}: {v.detail}" if v and v.detail else ""


_REPLIES: dict[NotificationKind, Callable[[Notice], str]] = {
    NotificationKind.OPENED: _opened,
    NotificationKind.AWAITING_APPROVAL: lambda n: f":hourglass: Waiting for {waiting_for(n)}.",
    NotificationKind.APPROVED: lambda n: f":white_check_mark: Approved by {_approvers(n, 'approve') or 'quorum'}.",
    NotificationKind.REJECTED: lambda n: (
        f":no_entry: Rejected by {_approvers(n, 'reject') or 'an approver'}; no rollback will run."
    ),
    NotificationKind.ACKNOWLEDGED: lambda n: f":eyes: Acknowledged by {n.record.acknowledged_by or 'a responder'}.",
    NotificationKind.ROLLING_BACK: _rolling_back,
    NotificationKind.VERIFYING: lambda n: (
        f":stethoscope: Rollback applied ({'; '.join(_action_lines(n.record)) or n.summary}); verifying."
    ),
    NotificationKind.RESOLVED: lambda n: f":large_green_circle: Resolved. {_verification(n)}".rstrip(),
    NotificationKind.FAILED: lambda n: f":x: Failed: {_verification(n) or n.summary}. A human must act.",
}


def thread_reply(n: Notice) -> str:
    """One reply per step, posted in the incident message's thread."""
    render = _REPLIES.get(n.kind)
    if render is None:
        return _text(f":information_source: {n.kind.value.replace('_', ' ').capitalize()}: {n.summary}")
    return _text(render(n))


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
