"""Slack's Web API as every Slack part here uses it: the client (429s
retried, nothing else), one way to call it (failures become ChannelFailed,
saying whether another try could help), and the two questions the buttons
ask: is this user in that group, and how to answer the one who clicked.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from ..notify.channel import ChannelFailed

_T = TypeVar("_T")

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
