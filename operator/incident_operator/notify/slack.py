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

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from ..escalation import step_of
from ..models import Incident, SlackRef
from ..policy import Policy
from .channel import ChannelFailed, Told
from .slack_blocks import fallback_text, incident_blocks, record_text
from .story import incident_link

_T = TypeVar("_T")

MESSAGE_EVENT = "incident"
RECORD_EVENT = "incident_record"
# How far before the Incident's creation to look for its message (clock skew).
HISTORY_SLACK_SECONDS = 300
HISTORY_PAGES = 10
# Errors Slack documents as passing; anything else needs a human (a bad
# token, a missing scope, an unknown channel) and is not retried.
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def slack_client(*, token: str, base_url: str | None = None, timeout: int = 5) -> AsyncWebClient:
    """The Web API client: retries 429s (after Retry-After), nothing else.

    A 429 was not acted on. A dropped connection may have been: the post went
    through and its answer was lost. slack_sdk would post again; the fan-out
    retries instead, through `tell`, which looks for the message first.
    """
    return AsyncWebClient(
        token=token,
        base_url=base_url or AsyncWebClient.BASE_URL,
        timeout=timeout,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
    )


async def slack_call(doing: str, call: Awaitable[_T]) -> _T:
    """Await a Web API call; failures become ChannelFailed saying what and why."""
    try:
        return await call
    except SlackApiError as error:
        code = error.response.get("error") or "no error code"
        status = error.response.status_code
        retryable = status == 429 or status >= 500 or code in TRANSIENT_ERRORS
        raise ChannelFailed(
            f"could not {doing}: {code} (HTTP {status})", retryable=retryable
        ) from error
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as error:
        raise ChannelFailed(
            f"could not {doing}: {type(error).__name__}: {error}", retryable=True
        ) from error


async def user_in_group(client: AsyncWebClient, *, group: str, user: str) -> bool:
    """Whether `user` is in the Slack user group `group` (needs `usergroups:read`);
    ChannelFailed when Slack cannot say."""
    answer = await slack_call(
        "list the approver group", client.usergroups_users_list(usergroup=group)
    )
    return user in (answer.get("users") or [])


async def reply_ephemeral(url: str, text: str) -> str | None:
    """Post `text` to an interaction's `response_url`, seen only by the one who
    clicked. None once Slack took it, else what went wrong: a reply is a
    courtesy after the click was decided, so it is not retried."""
    try:
        answer = await AsyncWebhookClient(url).send(
            text=text, response_type="ephemeral", replace_original=False
        )
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as error:
        return f"could not answer the click: {type(error).__name__}: {error}"
    if answer.status_code != 200:
        return (
            f"Slack refused the answer to the click: HTTP {answer.status_code} {answer.body[:200]}"
        )
    return None


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
