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

A request takes its slot once its body is in, not when its headers are: a
sender that sends its body slowly (or never finishes it) holds no slot, so
a few such connections cannot make the webhook refuse everyone else. A
request that finds no slot then is refused the same way, its body read but
nothing done with it.

A request whose alarm joins an Incident's paced write (see `recorder.py`)
gives its slot back (`give_back_slot()`): from then on it only waits, and
the write it waits for costs the same with or without it. So a storm on a
few Incidents is never shed: its senders wait out the interval, they do not
fill the webhook.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from contextvars import ContextVar

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A full queue drains in well under a second at the webhook's rate (460
# alarms/s on 2 cores, bench/RESULTS.md): a second later it has room again.
RETRY_AFTER_SECONDS = 1


class Overloaded(HTTPException):
    """No slot for a request whose body is in (the app answers it as
    `InFlightLimit` answers at the headers). An HTTPException, so that
    FastAPI's body reading passes it on untouched."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class _Slot:
    """One request's place among those in flight."""

    def __init__(self, limit: InFlightLimit) -> None:
        self.limit, self.holding = limit, False

    def take(self) -> None:
        self.holding = True
        self.limit._change(+1)

    def give_back(self) -> None:
        if self.holding:
            self.holding = False
            self.limit._change(-1)


_SLOT: ContextVar[_Slot | None] = ContextVar("ingest_slot", default=None)


def give_back_slot() -> None:
    """The current request only waits from now on: its slot is free for another."""
    slot = _SLOT.get()
    if slot is not None:
        slot.give_back()


class InFlightLimit:
    """ASGI middleware: at most `limit` POSTs to `paths` in flight at once.

    A request is in flight from the end of its body until the last byte of
    its answer is handed to the server: a sender that waits for its answer
    before it sends again is never shed while it alone stays within the
    limit. It is refused when the limit is reached at its headers (at once,
    with `refusal()`) or at the end of its body (raising Overloaded).
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
        self.message = (
            f"the webhook is working on {limit} alarm requests, the most it takes at once "
            f"(INGEST_MAX_IN_FLIGHT); nothing was recorded: retry after {RETRY_AFTER_SECONDS} s"
        )
        self._refusal = json.dumps({"error": "overloaded", "message": self.message}).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.on_shed(scope["path"])
            await self._refuse(send)
            return
        slot = _Slot(self)
        taken = False

        async def receive_and_hold() -> Message:
            nonlocal taken
            message = await receive()
            if (
                not taken
                and message["type"] == "http.request"
                and not message.get("more_body", False)
            ):
                if self.in_flight >= self.limit:
                    self.on_shed(scope["path"])
                    raise Overloaded(self.message)
                taken = True
                slot.take()
            return message

        async def send_and_release(message: Message) -> None:
            # Released before the last part of the answer goes out: by the
            # time the sender has its answer, its slot is free again.
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                slot.give_back()
            await send(message)

        token = _SLOT.set(slot)
        try:
            await self.app(scope, receive_and_hold, send_and_release)
        finally:
            slot.give_back()
            _SLOT.reset(token)

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
