"""Block Kit for Slack: the incident message, its thread replies and the approval modal.

Pure functions from a ``Notice`` (the step and the incident's typed decision
record) to Slack payloads, so layout is tested without a network. The incident
message answers, at a glance: what broke, what rollbackd decided and why, what
the rollback did and what its verification found, and what it is waiting for.
Buttons carry the incident id in their ``action_id``
(``rollbackd:<verb>:<incident_id>``); the approval modal asks for the code in a
``plain_text_input`` so it never appears in a message.

Every text is composed from raw values and our own markup, then escaped once
(``notify.text.escape``: nothing an alert carries can mention, link or format)
and cut to Slack's limits (section text 3,000, field 2,000, header 150, button
value 2,000, 50 blocks), visibly, with a link to the full decision record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any

from daemon.incidents.record import ApprovalEntry, IncidentRecord
from daemon.incidents.state import State
from daemon.model import Decision, NotificationKind, QuorumMode, Severity
from daemon.notify.notice import Notice
from daemon.notify.text import clip, clip_plain, escape

ACTION_PREFIX = "rollbackd"
VERBS = ("ack", "approve", "reject")
APPROVE_CALLBACK = "rollbackd:approve"
CODE_BLOCK = "code"
CODE_ACTION = "code"

# Slack's documented Block Kit limits.
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
HEADER_TEXT_MAX = 150
BUTTON_VALUE_MAX = 2000
BLOCKS_MAX = 50
MESSAGE_TEXT_MAX = 3000  # a message's fallback text and thread replies: Slack allows more, nobody reads more

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


def _fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def measured_text(measured: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} = {_fmt_value(v)}" for k, v in sorted(measured.items()))


def deploy_text(d: Decision) -> str:
    """The deploy the decision is about, as the delivery pipeline reported it (author included)."""
    dep = d.deploy
    if dep is None:
        return ""
    what = dep.version or dep.image or (f"revision {dep.revision}" if dep.revision is not None else "a deploy")
    return f"{what} by {dep.author}" if dep.author else what


def quorum_progress(r: IncidentRecord) -> str:
    """How far the quorum is: ``1 of 2: CTO ✓, Data Lead pending`` (all_of), ``any one of: …`` (any_of)."""
    req = r.decision.approval
    if not req.required:
        return ""
    approved = [a.role for a in r.verdicts("approve")]
    parts, done = [], 0
    for role, need in req.roles.items():
        got = min(approved.count(role), need)
        done += got
        if got >= need:
            parts.append(f"{role} ✓" if need == 1 else f"{role} ✓ {got}/{need}")
        else:
            parts.append(f"{role} pending" if need == 1 else f"{role} {got}/{need}")
    if req.mode is QuorumMode.ANY_OF:
        return "any one of: " + ", ".join(parts)
    return f"{done} of {sum(req.roles.values())}: " + ", ".join(parts)


def verdict_line(a: ApprovalEntry) -> str:
    """Who gave a verdict, as what, when and where: the line that replaces the buttons."""
    icon, verb = (":white_check_mark:", "Approved") if a.verdict == "approve" else (":no_entry:", "Rejected")
    line = f"{icon} {verb} by {a.approver} as {a.role} at {a.at.astimezone(UTC):%Y-%m-%d %H:%M} UTC via {a.via}"
    return line + (f": {a.comment}" if a.comment else "")


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
        {"type": "header", "text": {"type": "plain_text", "text": clip_plain(escape(headline), HEADER_TEXT_MAX)}},
        {"type": "section", "fields": [_mrkdwn(f, FIELD_TEXT_MAX, incident_url) for f in fields]},
    ]
    why = d.reason or "no reason recorded"
    if d.measured:
        why += f"\nMeasured: {measured_text(d.measured)}"
    if d.to_revision is not None:
        why += f"\nRollback to revision {d.to_revision}"
    if d.deploy is not None:
        why += f"\nDeploy: {deploy_text(d)}"
    blocks.append(_section(f"*Why:* {why}", incident_url))
    if outcome := outcome_text(r):
        blocks.append(_section(f"*Outcome:*\n{outcome}", incident_url))
    if progress := quorum_progress(r):
        blocks.append(_section(f"*Approvals:* {progress}", incident_url))
    blocks.append(_section(f"*Waiting for:* {waiting_for(n)}", incident_url))
    if r.approvals:  # once a verdict is in, who did what and when stands where Approve/Reject were
        blocks.append(_section("\n".join(verdict_line(a) for a in r.approvals), incident_url))
    buttons = _buttons(r)
    if buttons:
        blocks.append({"type": "actions", "block_id": f"rollbackd:{r.id}", "elements": buttons})
    context = f"incident `{escape(r.id)}`"
    if incident_url:
        context += f" · <{incident_url}|decision record>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    fallback = clip(escape(f"[{n.severity.value}] {n.summary} — {r.state.value}"), MESSAGE_TEXT_MAX, incident_url)
    return fallback, _capped(blocks)


def _mrkdwn(raw: str, limit: int, url: str | None) -> dict[str, Any]:
    """A mrkdwn text object: ``raw`` (untrusted values and our markup) escaped, then cut to ``limit``."""
    return {"type": "mrkdwn", "text": clip(escape(raw), limit, url)}


def _section(raw: str, url: str | None = None) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(raw, SECTION_TEXT_MAX, url)}


def _capped(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most ``BLOCKS_MAX`` blocks; the last one (the context with the record's link) always stays."""
    if len(blocks) <= BLOCKS_MAX:
        return blocks
    return [*blocks[: BLOCKS_MAX - 2], _section("…"), blocks[-1]]


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
        "value": clip_plain(incident_id, BUTTON_VALUE_MAX),
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


def thread_reply(n: Notice, incident_url: str | None = None) -> str:
    """One reply per step, posted in the incident message's thread (mrkdwn, escaped and cut)."""
    render = _REPLIES.get(n.kind)
    if render is None:
        raw = f":information_source: {n.kind.value.replace('_', ' ').capitalize()}: {n.summary}"
    else:
        raw = render(n)
    return clip(escape(raw), MESSAGE_TEXT_MAX, incident_url)


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
            _section(f"*{summary}*\nincident `{incident_id}`"),
            {
                "type": "input",
                "block_id": CODE_BLOCK,
                "label": {"type": "plain_text", "text": "Your approval code"},
                "element": {"type": "plain_text_input", "action_id": CODE_ACTION, "max_length": 128},
            },
        ],
    }
