"""Untrusted text on its way into a notification: escaped for Slack, cut to the receiver's limits, and the
incident's address.

Part of the notify stage, shared by the renderers (``slack_render``, the
PagerDuty notifier) and the Slack callbacks' replies. Alert labels and
annotations, rule names, reasons people typed and deploy authors from Kafka
all reach a message; in Slack's mrkdwn ``<!channel>``, ``<@U…>``, ``<#C…>`` and
``<https://…|text>`` are control sequences, so every such text goes through
``escape`` (Slack's three entities, ``&`` first). The renderers compose a text
from raw values and their own markup (``*bold*``, emoji), escape the whole of
it once, and only then add the links they make themselves.

Cutting is visible: a text over its limit ends in "…" and, when the renderer
has one, a link to the full decision record, so nobody mistakes a cut message
for the whole story.
"""

from __future__ import annotations

import re

ELLIPSIS = "…"
_PARTIAL_ENTITY = re.compile(r"&[a-z]*$")  # "&amp;" cut short would show as "&am"


def incident_url(public_url: str | None, incident_id: str) -> str | None:
    """The one address every notification links an incident to (its page), None without a public URL."""
    return f"{public_url.rstrip('/')}/incidents/{incident_id}" if public_url else None


def escape(text: str) -> str:
    """``text`` with Slack's reserved characters as entities: it can no longer mention, link or format a channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def more_link(url: str | None) -> str:
    """The link a cut text ends with (mrkdwn), or nothing when there is no record to link to."""
    return f" <{url}|full record>" if url else ""


def clip(mrkdwn: str, limit: int, url: str | None = None) -> str:
    """Already-escaped mrkdwn cut to ``limit`` characters, ending in "…" and a link to ``url`` when cut."""
    if len(mrkdwn) <= limit:
        return mrkdwn
    tail = ELLIPSIS + more_link(url)
    if len(tail) >= limit:  # no room for the link: the ellipsis alone
        tail = ELLIPSIS
    head = _PARTIAL_ENTITY.sub("", mrkdwn[: limit - len(tail)])
    return head + tail


def clip_plain(text: str, limit: int) -> str:
    """Plain text (no links possible) cut to ``limit`` characters, ending in "…" when cut."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS
