"""Slack: one message per Incident, kept current, with the story in its thread.

The first transition posts the message; later ones `chat.update` it (its
channel and ts live in status.notifications.slack) and reply in its thread
with the transition's records. Nothing is posted twice, even when the
operator dies between posting and writing the status: the message carries
metadata naming the Incident's uid, and without a recorded ts we first look
for it in the channel's recent history. Replies carry a key per record and
are checked against the thread the same way.

The bot needs `chat:write` and `channels:history` (`groups:history` for a
private channel); the channel must be given by ID, since history is read by ID.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from ..escalation import step_of
from ..models import Incident, SlackRef
from ..notify.channel import ChannelFailed, Told
from ..notify.story import incident_link
from ..policy import Policy
from .api import slack_call
from .blocks import fallback_text, incident_blocks, record_text

_T = TypeVar("_T")

MESSAGE_EVENT = "incident"
RECORD_EVENT = "incident_record"
# How far before the Incident's creation to look for its message (clock skew).
HISTORY_SLACK_SECONDS = 300
HISTORY_PAGES = 10


def record_key(phase: str, index: int, kind: str, reason: str) -> str:
    # No timestamp in it: a transition decided again after a crash gets a new
    # time, but is the same step, and must not be replied twice.
    return f"{phase}/{index}/{kind}/{reason}"


class SlackChannel:
    name = "slack"

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        default_channel: str | None,
        link_template: str | None = None,
    ) -> None:
        self._client = client
        self._default_channel = default_channel
        self._link_template = link_template

    def wants(self, incident: Incident, *, policy: Policy) -> bool:
        return True  # every transition changes what the message shows

    async def tell(self, incident: Incident, *, policy: Policy) -> Told:
        notifications = incident.status.notifications
        ref = notifications.slack if notifications else None
        note = "message updated"
        if ref is None:
            target = policy.spec.notify.slack
            channel = (target.channel if target else None) or self._default_channel
            if not channel:
                raise ChannelFailed(
                    "no channel: set SLACK_CHANNEL or the policy's notify.slack.channel",
                    retryable=False,
                )
            ref = await self._find(channel, incident)
            if ref is None:
                ref = await self._post(channel, incident)
                note = "message posted"
        if note == "message updated":
            await slack_call(
                "update the message",
                self._client.chat_update(
                    channel=ref.channel,
                    ts=ref.ts,
                    text=fallback_text(incident),
                    blocks=incident_blocks(
                        incident, link=incident_link(incident, self._link_template)
                    ),
                    metadata=_metadata(MESSAGE_EVENT, incident),
                ),
            )
        replied = await self._reply(ref, incident, fresh=note == "message posted")
        if replied:
            note += f", {replied} thread {'reply' if replied == 1 else 'replies'}"
        return Told({"slack": SlackRef(channel=ref.channel, ts=ref.ts).to_api()}, note)

    async def _post(self, channel: str, incident: Incident) -> SlackRef:
        answer = await slack_call(
            "post the message",
            self._client.chat_postMessage(
                channel=channel,
                text=fallback_text(incident),
                blocks=incident_blocks(incident, link=incident_link(incident, self._link_template)),
                metadata=_metadata(MESSAGE_EVENT, incident),
                unfurl_links=False,
            ),
        )
        return SlackRef(channel=str(answer["channel"]), ts=str(answer["ts"]))

    async def _find(self, channel: str, incident: Incident) -> SlackRef | None:
        """The Incident's message, if an earlier attempt posted it but its ts was not recorded."""
        uid = incident.metadata.get("uid")
        oldest = _epoch(incident.metadata.get("creationTimestamp")) - HISTORY_SLACK_SECONDS
        pages = _pages(
            "read the channel's history",
            lambda cursor: self._client.conversations_history(
                channel=channel,
                oldest=f"{max(oldest, 0):.6f}",
                limit=200,
                include_all_metadata=True,
                cursor=cursor,
            ),
        )
        async for page in pages:
            for message in page.get("messages") or []:
                if _payload(message, MESSAGE_EVENT).get("uid") == uid:
                    return SlackRef(channel=str(page.get("channel") or channel), ts=message["ts"])
        return None

    async def _reply(self, ref: SlackRef, incident: Incident, *, fresh: bool) -> int:
        """Post the latest transition's records in the thread, each once."""
        last = incident.status.last_transition
        if last is None or not last.records:
            return 0
        keyed = [
            (record_key(last.phase, index, record.kind, record.reason), record)
            for index, record in enumerate(last.records)
        ]
        posted = set() if fresh else await self._replied(ref, incident)
        count = 0
        for key, record in keyed:
            if key in posted:
                continue
            text = record_text(record)
            step = step_of(incident, record)
            if step is not None and step.slack_user_group:
                # An escalation step: the user group is mentioned, so notified.
                text = f"<!subteam^{step.slack_user_group}> {text}"
            await slack_call(
                "reply in the thread",
                self._client.chat_postMessage(
                    channel=ref.channel,
                    thread_ts=ref.ts,
                    text=text,
                    metadata=_metadata(RECORD_EVENT, incident, record=key),
                ),
            )
            count += 1
        return count

    async def _replied(self, ref: SlackRef, incident: Incident) -> set[str]:
        uid = incident.metadata.get("uid")
        keys: set[str] = set()
        pages = _pages(
            "read the thread",
            lambda cursor: self._client.conversations_replies(
                channel=ref.channel, ts=ref.ts, limit=200, include_all_metadata=True, cursor=cursor
            ),
        )
        async for page in pages:
            for message in page.get("messages") or []:
                payload = _payload(message, RECORD_EVENT)
                if payload.get("uid") == uid and payload.get("record"):
                    keys.add(str(payload["record"]))
        return keys


async def _pages(
    doing: str, call: Callable[[str | None], Awaitable[AsyncSlackResponse]]
) -> AsyncIterator[AsyncSlackResponse]:
    """The pages of a cursor-paginated call, HISTORY_PAGES at most."""
    cursor: str | None = None
    for _ in range(HISTORY_PAGES):
        page = await slack_call(doing, call(cursor))
        yield page
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return


def _metadata(event: str, incident: Incident, **extra: str) -> dict[str, Any]:
    metadata = incident.metadata
    return {
        "event_type": event,
        "event_payload": {
            "uid": metadata.get("uid", ""),
            "incident": incident.reference,
            **extra,
        },
    }


def _payload(message: dict[str, Any], event: str) -> dict[str, Any]:
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != event:
        return {}
    payload = metadata.get("event_payload")
    return payload if isinstance(payload, dict) else {}


def _epoch(stamp: Any) -> float:
    if not isinstance(stamp, str):
        return 0.0
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
