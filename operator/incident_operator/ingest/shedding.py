"""Load shedding: a bound on the alarm requests the webhook works on at once.

Past the bound a request is answered 503 with Retry-After at once, before a
byte of its body is read: it costs a header parse and a short answer, and it
changes nothing. Every sender of alarms retries a 503 (Alertmanager,
EventBridge and SNS all do), and unlike a reset or a timeout, a 503 tells
the sender its alarm was not taken.

Without the bound, an overloaded webhook takes every request and works on
all of them at once: each answer waits behind every other, the senders'
timeouts expire while their alarms are still being written, and an alarm may
be recorded after its sender gave up on it (and will send it again).

Only alarm requests count and are shed; health, readiness and metrics are
always answered, and so are Slack's button clicks (a person's, rare, and
Slack does not retry them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A full queue drains in well under a second at the webhook's rate (460
# alarms/s on 2 cores, bench/RESULTS.md): a second later it has room again.
RETRY_AFTER_SECONDS = 1


class InFlightLimit:
    """ASGI middleware: at most `limit` POSTs to `paths` in flight at once.

    A request is in flight from its headers until the last byte of its answer
    is handed to the server: a sender that waits for its answer before it
    sends again is never shed while it alone stays within the limit.
    `on_shed(path)` is called for each request shed, `on_change(n)` whenever
    the number in flight changes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        paths: Collection[str],
        on_shed: Callable[[str], None],
        on_change: Callable[[int], None],
    ) -> None:
        self.app = app
        self.limit = limit
        self.paths = frozenset(paths)
        self.on_shed = on_shed
        self.on_change = on_change
        self.in_flight = 0
        self._refusal = json.dumps(
            {
                "error": "overloaded",
                "message": f"the webhook is working on {limit} alarm requests, the most it "
                f"takes at once (INGEST_MAX_IN_FLIGHT); nothing was recorded: retry after "
                f"{RETRY_AFTER_SECONDS} s",
            }
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.on_shed(scope["path"])
            await self._refuse(send)
            return
        self._change(+1)
        released = False

        async def send_and_release(message: Message) -> None:
            nonlocal released
            # Released before the last part of the answer goes out: by the
            # time the sender has its answer, its slot is free again.
            if (
                message["type"] == "http.response.body"
                and not message.get("more_body", False)
                and not released
            ):
                released = True
                self._change(-1)
            await send(message)

        try:
            await self.app(scope, receive, send_and_release)
        finally:
            if not released:
                self._change(-1)

    def _change(self, step: int) -> None:
        self.in_flight += step
        self.on_change(self.in_flight)

    async def _refuse(self, send: Send) -> None:
        # No "Connection: close": the server reads past the unread body and
        # keeps the connection, where closing a socket with unread data in
        # it would make the kernel reset it.
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._refusal)).encode()),
                    (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self._refusal})
