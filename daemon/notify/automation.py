"""Slack notices that are about the automation, not an incident: a pause, a resume.

Part of notify. ``control.pauses`` writes one outbox row on the
``slack-automation`` channel with each pause and resume, in the same
transaction; this notifier posts its line to the default Slack channel with
the same Web API client and error mapping as the incident notifier. The
reason is people's free text: it goes through ``notify.text.escape`` (``&``,
``<``, ``>``), so it cannot mention a channel or forge a link, and is cut to
Slack's 3,000 characters.
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
from daemon.notify.text import clip, escape

TEXT_MAX = 3000


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
            await self._client.chat_postMessage(channel=self._default_channel, text=clip(escape(text), TEXT_MAX))
        except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
            raise map_slack_error("chat.postMessage", exc) from None
