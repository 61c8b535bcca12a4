"""Lanes of outgoing HTTP events: in order, paced, retried, never dropped.

PagerDuty's Events API takes about 120 events a minute per routing key and
answers 429 past that; a webhook receiver may be down for a while. Both are
reached through an `Outbox`: one lane per destination (a routing key, a
URL), each a FIFO worked by one task, so a burst of 200 escalations is sent
in the order it came, no faster than the lane's pace, and an event that is
throttled (429) or meets a failure that may pass (5xx, no connection) is
tried again after a backoff, as often as it takes: nothing is dropped. Only
an answer that says the event itself is wrong (another 4xx) ends it, as a
refusal.

The caller waits for its event only as long as it can (`wait`): the event
stays in its lane after that, and a later call for the same event (same
`key`) joins it instead of queueing it twice. Lanes live in memory: a
restarted process starts empty, and its channels queue again what was never
recorded as delivered.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import aiohttp

log = logging.getLogger(__name__)

_E = TypeVar("_E")


class TryAgain(Exception):
    """The destination could not take the event now (429, 5xx, no connection)."""

    def __init__(self, message: str, *, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after  # seconds, when the destination said (Retry-After)


class Refused(Exception):
    """The destination refused the event itself (a 400): sending it again cannot help."""


@dataclass
class _Item(Generic[_E]):
    key: str
    destination: str
    event: _E
    done: asyncio.Future[None]
    attempts: int = 0


@dataclass
class _Lane(Generic[_E]):
    queue: asyncio.Queue[_Item[_E]] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None
    next_at: float = 0.0  # when the next send may start (monotonic)


class Outbox(Generic[_E]):
    """Per-destination FIFO lanes sending events with `send`.

    `send(destination, event)` returns once the destination accepted the
    event, raises `TryAgain` to have it retried after a backoff, `Refused`
    to give it up. `per_minute` paces each lane (None: no pace); `backoff`
    is the first retry delay, doubled per attempt up to `max_backoff`.
    """

    def __init__(
        self,
        *,
        send: Callable[[str, _E], Awaitable[None]],
        per_minute: float | None,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[str, str], None] = lambda destination, problem: None,
    ) -> None:
        self._send = send
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._clock = clock
        self._on_retry = on_retry
        self._lanes: dict[str, _Lane[_E]] = {}
        self._pending: dict[str, _Item[_E]] = {}

    def depth(self, destination: str | None = None) -> int:
        """Events not yet delivered in the lane (the one being sent included), or in all."""
        return sum(
            1
            for item in self._pending.values()
            if destination is None or item.destination == destination
        )

    def submit(self, destination: str, key: str, event: _E) -> asyncio.Future[None]:
        """Queue `event` (named `key`) for `destination`, or join the one queued under `key`."""
        item = self._pending.get(key)
        if item is not None:
            return item.done
        item = _Item(key, destination, event, asyncio.get_running_loop().create_future())
        # A refusal nobody waits for any more is in the log; not an unretrieved error.
        item.done.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._pending[key] = item
        lane = self._lanes.setdefault(destination, _Lane())
        lane.queue.put_nowait(item)
        if lane.worker is None or lane.worker.done():
            lane.worker = asyncio.create_task(self._work(destination, lane))
        return item.done

    async def close(self) -> None:
        for lane in self._lanes.values():
            if lane.worker is not None:
                lane.worker.cancel()
        await asyncio.gather(
            *(lane.worker for lane in self._lanes.values() if lane.worker), return_exceptions=True
        )

    async def _work(self, destination: str, lane: _Lane[_E]) -> None:
        while True:
            item = await lane.queue.get()
            try:
                await self._deliver(destination, lane, item)
            finally:
                self._pending.pop(item.key, None)

    async def _deliver(self, destination: str, lane: _Lane[_E], item: _Item[_E]) -> None:
        delay = self._backoff
        while True:
            wait = lane.next_at - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            lane.next_at = self._clock() + self._interval
            item.attempts += 1
            try:
                await self._send(destination, item.event)
            except TryAgain as busy:
                # Jittered, so lanes that failed together do not retry in step;
                # the whole lane waits: later events would meet the same 429.
                pause = busy.after if busy.after is not None else delay * random.uniform(0.8, 1.2)
                lane.next_at = max(lane.next_at, self._clock() + pause)
                delay = min(delay * 2, self._max_backoff)
                self._on_retry(destination, str(busy))
                log.info(
                    "event to be sent again",
                    extra={"key": item.key, "attempt": item.attempts, "error": str(busy)[:300],
                           "after": round(pause, 3)},
                )  # fmt: skip
                continue
            except Exception as error:  # Refused, or a bug: the caller is told
                if not item.done.done():
                    item.done.set_exception(error)
                return
            if not item.done.done():
                item.done.set_result(None)
            return


async def wait_for(done: asyncio.Future[None], *, seconds: float) -> bool:
    """Whether `done` finished within `seconds`; it goes on either way (asyncio.wait
    cancels nothing), and its outcome is read from it."""
    finished, _ = await asyncio.wait({done}, timeout=seconds)
    return bool(finished)


class Poster:
    """POSTs events for a lane's `send`: answers sorted into taken, TryAgain, Refused.

    Taken: any 2xx. Tried again: 408, 429, 5xx, and no answer at all (the
    event may have arrived: every event carries a key its destination
    dedupes on). Refused: the rest. Redirects are not followed.
    """

    def __init__(self, *, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, *, body: bytes, headers: Mapping[str, str], what: str) -> None:
        """POST `body` to `url`; `what` names the event and its destination in errors."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as answer:
                status = answer.status
                text = (await answer.text())[:300]
                retry_after = answer.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise TryAgain(f"no answer to {what}: {type(error).__name__}: {error}") from error
        if status in (408, 429) or status >= 500:
            raise TryAgain(
                f"HTTP {status} to {what}: {text}", after=retry_after_seconds(retry_after)
            )
        if not 200 <= status < 300:
            raise Refused(f"HTTP {status}: {text}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (the HTTP-date form is not used by these APIs)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
