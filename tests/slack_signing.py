"""Requests as Slack sends them to /slack/actions: form-encoded, signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """Slack's headers for `body`: v0= HMAC-SHA256 of `v0:{ts}:{body}`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


def click(
    action_id: str,
    value: str,
    *,
    user: str,
    response_url: str,
    message_ts: str | None = None,
    channel: str = "C0INCIDENTS",
) -> bytes:
    """The form body of a block_actions interaction: one button clicked."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0TEAM"},
        "api_app_id": "A0APP",
        "team": {"id": "T0TEAM", "domain": "example"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "channel": {"id": channel, "name": "incidents"},
        "trigger_id": "1337.42.abcdef",
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "b1",
                "value": value,
                "text": {"type": "plain_text", "text": action_id},
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def form_body(payload: str) -> bytes:
    """The form body Slack posts, around any payload text."""
    return urlencode({"payload": payload}).encode()
