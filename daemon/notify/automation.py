"""Slack notices that are about the automation, not an incident: a pause, a resume.

Part of notify. ``control.pauses`` writes one outbox row on the
``slack-automation`` channel with each pause and resume, in the same
transaction; this notifier posts its line to the default Slack channel with
the same Web API client and error mapping as the incident notifier. The
reason is people's free text: ``&``, ``<`` and ``>`` are escaped so it cannot
mention a channel or forge a link.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from daemon.config import SlackSettings
from daemon.control.pauses import AUTOMATION_SLACK
from daemon.errors import PermanentError
from daemon.notify.slack import make_web_client, map_slack_error


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class AutomationSlackNotifier:
    """Delivers outbox rows of channel ``slack-automation``: one message each."""

    channel = AUTOMATION_SLACK

    def __init__(self, client: AsyncWebClient, *, default_channel: str) -> None:
        self._client = client
        self._default_channel = default_channel

    @classmethod
    def from_settings(cls, settings: SlackSettings) -> AutomationSlackNotifier:
        return cls(make_web_client(settings), default_channel=settings.default_channel)

    async def deliver(self, payload: dict[str, Any]) -> None:
        text = payload.get("text")
        if not isinstance(text, str) or not text:
            raise PermanentError("automation notice without text", reason="bad_payload")
        try:
            await self._client.chat_postMessage(channel=self._default_channel, text=_escaped(text))
        except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
            raise map_slack_error("chat.postMessage", exc) from None
