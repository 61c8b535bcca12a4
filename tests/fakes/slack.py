"""A fake Slack Web API on loopback, as slack_sdk's clients call it.

`POST /api/chat.postMessage` and `/api/chat.update` (JSON or form),
`GET /api/conversations.history`, `/api/conversations.replies` and
`/api/usergroups.users.list`, plus `POST /respond/<id>` for response_urls
(`response_url()` makes one). Like Slack it wants the bot token, answers
HTTP 200 with `{"ok": false, "error": ...}` for API errors, returns message
metadata only when asked with `include_all_metadata`, and answers a rate
limit with HTTP 429 and Retry-After. Tests script failures per method
(`fail`, `rate_limit`) and read what it holds (`top_level`, `thread`,
`responses`) and what it received (`calls`).

Register with `pytest_plugins = ["fakes.slack"]` for the `slack` fixture.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from fakes.loopback import Answer, Call, Served

API = re.compile(r"^/api/(?P<method>[A-Za-z.]+)$")
RESPOND = re.compile(r"^/respond/(?P<id>[0-9a-f]+)$")
TRUE = ("1", "true", True)


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    thread_ts: str | None = None
    updates: int = 0

    def as_api(self, *, metadata: bool) -> dict[str, Any]:
        shown: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text,
                                 "blocks": self.blocks}  # fmt: skip
        if self.thread_ts:
            shown["thread_ts"] = self.thread_ts
        if metadata and self.metadata:
            shown["metadata"] = self.metadata
        return shown

    @property
    def shown(self) -> str:
        """Every text in the blocks, one per line: what a reader sees."""
        texts: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("text"), str):
                    texts.append(node["text"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(self.blocks)
        return "\n".join(texts)

    @property
    def buttons(self) -> list[str]:
        return [
            element["action_id"]
            for block in self.blocks
            if block.get("type") == "actions"
            for element in block.get("elements", [])
        ]


@dataclass
class FakeSlack(Served):
    token: str = field(default_factory=lambda: "xoxb-" + secrets.token_hex(12))
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    # What was posted to each response_url, by its id.
    responses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _failures: dict[str, deque[Answer]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # --- scripting ---------------------------------------------------------

    def fail(self, method: str, error: str, *, times: int = 1, status: int = 200) -> None:
        """The next `times` calls of `method` answer `{"ok": false, "error": error}`."""
        answer = Answer(status, {"ok": False, "error": error})
        with self._lock:
            self._failures.setdefault(method, deque()).extend([answer] * times)

    def rate_limit(self, method: str, *, retry_after: int = 1, times: int = 1) -> None:
        answer = Answer(429, {"ok": False, "error": "ratelimited"},
                        {"Retry-After": str(retry_after)})  # fmt: skip
        with self._lock:
            self._failures.setdefault(method, deque()).extend([answer] * times)

    def recover(self) -> None:
        """Drop every scripted failure not met yet."""
        with self._lock:
            self._failures.clear()
        self._after.clear()

    def pending(self) -> int:
        with self._lock:
            return super().pending() + sum(len(q) for q in self._failures.values())

    def response_url(self) -> str:
        key = secrets.token_hex(8)
        self.responses[key] = []
        return f"{self.url}/respond/{key}"

    # --- reading -----------------------------------------------------------

    def top_level(self, channel: str | None = None) -> list[Message]:
        return [
            m for m in self.messages
            if m.thread_ts is None and (channel is None or m.channel == channel)
        ]  # fmt: skip

    def thread(self, parent: Message) -> list[Message]:
        return [m for m in self.messages if m.thread_ts == parent.ts and m.ts != parent.ts]

    def said(self, response_url: str) -> list[str]:
        return [body.get("text", "") for body in self.responses[response_url.rsplit("/", 1)[-1]]]

    def count(self, method: str) -> int:
        return sum(1 for call in self.calls if call.path == f"/api/{method}")

    @property
    def api_url(self) -> str:
        """What WebClient(base_url=...) and SLACK_API_URL want."""
        return f"{self.url}/api/"

    # --- serving -----------------------------------------------------------

    def _serve(self, call: Call) -> Answer:
        with self._lock:
            self.calls.append(call)
        responded = RESPOND.match(call.path)
        if responded and call.method == "POST":
            self.responses.setdefault(responded["id"], []).append(call.json() or {})
            return Answer(200, b"ok")
        found = API.match(call.path)
        if not found:
            return Answer(404, {"ok": False, "error": "unknown_method"})
        method = found["method"]
        if call.headers.get("authorization") != f"Bearer {self.token}":
            return Answer(200, {"ok": False, "error": "invalid_auth"})
        with self._lock:
            scripted = self._failures.get(method)
            if scripted:
                return scripted.popleft()
        params = call.params()
        handler = {
            "chat.postMessage": self._post,
            "chat.update": self._update,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "usergroups.users.list": self._group,
        }.get(method)
        if handler is None:
            return Answer(200, {"ok": False, "error": "unknown_method"})
        with self._lock:
            answer = Answer(200, handler(params))
        return self._late(method, answer)

    def _ts(self) -> str:
        return f"{int(time.time())}.{next(self._counter):06d}"

    def _post(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        thread_ts = params.get("thread_ts")
        if thread_ts and not any(m.ts == thread_ts for m in self.messages):
            return {"ok": False, "error": "thread_not_found"}
        message = Message(
            channel=channel,
            ts=self._ts(),
            text=params.get("text", ""),
            blocks=_json(params.get("blocks")) or [],
            metadata=_json(params.get("metadata")),
            thread_ts=thread_ts,
        )
        self.messages.append(message)
        return {"ok": True, "channel": channel, "ts": message.ts,
                "message": message.as_api(metadata=True)}  # fmt: skip

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._find(params.get("channel"), params.get("ts"))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.text = params.get("text", message.text)
        message.blocks = _json(params.get("blocks")) or message.blocks
        message.metadata = _json(params.get("metadata")) or message.metadata
        message.updates += 1
        return {"ok": True, "channel": message.channel, "ts": message.ts, "text": message.text}

    def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        oldest = float(params.get("oldest") or 0)
        shown = [
            m for m in self.messages
            if m.channel == channel and m.thread_ts is None and float(m.ts) > oldest
        ]  # fmt: skip
        shown.reverse()  # newest first, as Slack lists them
        return self._page(shown, params, channel=channel)

    def _replies(self, params: dict[str, Any]) -> dict[str, Any]:
        parent = self._find(params.get("channel"), params.get("ts"))
        if parent is None:
            return {"ok": False, "error": "thread_not_found"}
        return self._page([parent, *self.thread(parent)], params)

    def _page(self, found: list[Message], params: dict[str, Any], **extra: Any) -> dict[str, Any]:
        start = int(params.get("cursor") or 0)
        limit = int(params.get("limit") or 100)
        page = found[start : start + limit]
        more = start + limit < len(found)
        metadata = params.get("include_all_metadata") in TRUE
        return {
            "ok": True,
            **extra,
            "messages": [m.as_api(metadata=metadata) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _group(self, params: dict[str, Any]) -> dict[str, Any]:
        users = self.usergroups.get(params.get("usergroup", ""))
        if users is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": users}

    def _find(self, channel: Any, ts: Any) -> Message | None:
        return next((m for m in self.messages if m.channel == channel and m.ts == ts), None)


def _json(value: Any) -> Any:
    """Form-encoded calls carry blocks and metadata as JSON text."""
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """A fresh fake Slack per test; `.api_url` for the clients, `.token` their token."""
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()
