"""The Incidents' work queue: passes in the background, retried, woken up later.

- `submit` returns at once. Passes run in at most `concurrency` workers,
  never two for one Incident at once, each on the newest body of its
  Incident. What waits for a turn is that body, packed small: at startup
  every Incident arrives at once, and holding thousands of handler calls,
  or thousands of bodies as parsed JSON, would set the process's memory
  high for good.
- Incidents that still need a decision go first; finished ones (whose pass
  only repairs publishing) wait behind them.
- A pass that fails is tried again from a fresh read, after a backoff that
  doubles with each failure in a row (a stale body may have been the cause).
- `wake_later` reads the Incident again after a delay and queues a pass on
  it (an approval to time out, a rollout to look at). One wake-up per
  Incident: a new one replaces the one set before.

Owned here, not left to kopf, because kopf's means cost what the design
avoids: its event handlers are never retried; its retrying handlers keep
their progress on the object, a write per step; its per-object queues hold
every raw event, parsed, in no order between objects; its timers tick at a
fixed interval, and its daemons hold a task, for every object as long as it
exists. So kopf's handler only calls `submit`.

All the queue keeps about one Incident is one `_Kept`: `forget` drops it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from ..models import CLOSED_PHASES, HANDED_OFF_PHASES, Incident

log = logging.getLogger(__name__)

CONCURRENT_PASSES = 64
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0

Pass = Callable[[dict[str, Any]], Awaitable[None]]
# (namespace, name) -> the Incident's body as the API server has it, None if gone.
Read = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]


@dataclass(slots=True)
class _Kept:
    """What the queue keeps about one Incident."""

    body: bytes | None = None  # its newest body, packed, while it waits for a pass
    open: bool = True  # that body still needs a decision: it goes first
    wakeup: asyncio.TimerHandle | None = None
    failures: int = 0  # in a row
    retry_due: float = 0.0  # event loop time of the retry after the last failure


class PassQueue:
    """Runs `run(body)` for each Incident submitted, as the module says; `read`
    fetches an Incident for its wake-ups."""

    def __init__(self, *, run: Pass, read: Read, concurrency: int = CONCURRENT_PASSES) -> None:
        self._run = run
        self._read = read
        self._concurrency = concurrency
        self._kept: dict[str, _Kept] = {}
        # uids in the order they became due; the finished ones after every open one.
        self._due: deque[str] = deque()
        self._due_finished: deque[str] = deque()
        self._running: set[str] = set()
        self._workers: set[asyncio.Task[None]] = set()
        self._reads: set[asyncio.Task[None]] = set()  # wake-ups reading their Incident
        self._closed = False

    def submit(self, body: Mapping[str, Any], *, replace: bool = True) -> None:
        """Pass the Incident from this body soon; returns at once.

        A body waiting for its turn is replaced by a newer one (watch events
        arrive in order), so an Incident waits at most once, with its latest
        state. `replace=False` (a wake-up's read) leaves a waiting body be:
        a pass is due anyway, and a read may be older than the watch.
        """
        uid = body["metadata"]["uid"]
        kept = self._kept.get(uid)
        waiting = kept is not None and kept.body is not None
        if self._closed or (waiting and not replace):
            return
        is_open = _open(body)
        # Due once; an Incident that reopens while waiting as finished is due now.
        reopened = waiting and is_open and kept is not None and not kept.open
        if uid not in self._running and (not waiting or reopened):
            (self._due if is_open else self._due_finished).append(uid)
        kept = self._kept.setdefault(uid, _Kept())
        kept.body, kept.open = _pack(body), is_open
        if len(self._workers) < self._concurrency:
            worker = asyncio.get_running_loop().create_task(self._work())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    def wake_later(self, metadata: Mapping[str, Any], seconds: float) -> None:
        """Read the Incident of this metadata again in `seconds` and pass it,
        instead of the wake-up set before."""
        self._wake_later(metadata["uid"], metadata["namespace"], metadata["name"], seconds)

    def cancel_wakeup(self, uid: str) -> None:
        kept = self._kept.get(uid)
        if kept is not None and kept.wakeup is not None:
            kept.wakeup.cancel()
            kept.wakeup = None

    def wakeup_in(self, uid: str) -> float | None:
        """Seconds until the Incident's wake-up; None if none is set."""
        kept = self._kept.get(uid)
        if kept is None or kept.wakeup is None:
            return None
        return kept.wakeup.when() - asyncio.get_running_loop().time()

    def failures(self, uid: str) -> int:
        """The Incident's failures in a row (each lengthens its backoff)."""
        kept = self._kept.get(uid)
        return kept.failures if kept is not None else 0

    def forget(self, uid: str) -> None:
        """The Incident is gone: drop everything kept about it."""
        self.cancel_wakeup(uid)
        self._kept.pop(uid, None)

    @property
    def idle(self) -> bool:
        """No pass running and none waiting."""
        return self.depth == 0

    @property
    def depth(self) -> int:
        """Incidents waiting for a pass or in one."""
        waiting = sum(1 for kept in self._kept.values() if kept.body is not None)
        return waiting + len(self._running)

    async def close(self, *, grace: float) -> None:
        """Take no new pass, give the running ones `grace` seconds to finish,
        then cancel them."""
        self._closed = True
        for uid, kept in self._kept.items():
            kept.body = None
            self.cancel_wakeup(uid)
        tasks = self._workers | self._reads
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _work(self) -> None:
        """Run due passes one after the other until none is due."""
        while self._due or self._due_finished:
            uid = (self._due or self._due_finished).popleft()
            kept = self._kept.get(uid)
            if uid in self._running or kept is None or kept.body is None:
                continue  # in a pass (due again after it), done, or forgotten
            body, kept.body = _unpack(kept.body), None
            self._running.add(uid)
            try:
                await self._pass(body)
            finally:
                self._running.discard(uid)
                kept = self._kept.get(uid)  # forgotten during the pass, maybe
                if kept is not None and kept.body is not None:  # changed: again
                    (self._due if kept.open else self._due_finished).append(uid)

    async def _pass(self, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        try:
            await self._run(body)
        except Exception:
            # Tried again from a fresh read: the failure may have been a stale object.
            name = metadata.get("name")
            delay = self._backoff(metadata["uid"])
            if delay is None:
                log.exception("reconcile failed; its retry is due", extra={"incident": name})
                return
            log.exception("reconcile failed; retrying", extra={"incident": name, "retry_in": delay})
            if _valid(body):  # an invalid body would fail again, the same way
                self.wake_later(metadata, delay)
        else:
            kept = self._kept.get(metadata["uid"])
            if kept is not None:
                kept.failures, kept.retry_due = 0, 0.0

    def _backoff(self, uid: str) -> float | None:
        """Seconds until the next try after a failure of this Incident's, doubling
        with each failure; None when a retry is due already.

        A pass that fails while a retry is due (the watch's event of a write
        the failed pass made, say) fails for the same cause: it neither moves
        the retry nor lengthens the backoff, so one outage costs one step.
        """
        now = asyncio.get_running_loop().time()
        kept = self._kept.setdefault(uid, _Kept())
        if kept.retry_due > now:
            return None
        kept.failures += 1
        delay = float(min(RETRY_BASE_SECONDS * 2 ** (kept.failures - 1), RETRY_MAX_SECONDS))
        kept.retry_due = now + delay
        return delay

    def _wake_later(self, uid: str, namespace: str, name: str, seconds: float) -> None:
        self.cancel_wakeup(uid)
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        kept = self._kept.setdefault(uid, _Kept())

        def wake() -> None:
            kept.wakeup = None
            task = loop.create_task(self._wake(uid, namespace, name))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)

        kept.wakeup = loop.call_later(max(seconds, 0.05), wake)

    async def _wake(self, uid: str, namespace: str, name: str) -> None:
        try:
            body = await self._read(namespace, name)
        except client.ApiException as error:
            problem: object = f"API server answered {error.status}"
        except Exception as error:  # unreachable, timed out: try again
            problem = error
        else:
            if body is not None:  # else deleted: nothing left to do
                self.submit(body, replace=False)
            return
        # The read failed, not the Incident: without another wake-up it would
        # wait for a change that may never come (unless one is due already).
        delay = self._backoff(uid)
        log.warning(
            "wake-up failed; trying again" if delay is not None else "wake-up failed; retry due",
            extra={"incident": name, "error": str(problem), "retry_in": delay},
        )
        if delay is not None and self.wakeup_in(uid) is None:
            self._wake_later(uid, namespace, name, delay)


def _open(body: Mapping[str, Any]) -> bool:
    """Whether the phase machine may still decide something for this body."""
    status = body.get("status") or {}
    phase = status.get("phase")
    if phase in CLOSED_PHASES:
        return False
    if phase in HANDED_OFF_PHASES:
        return bool(status.get("alarmState") == "OK")  # recovered: to be resolved
    return True


def _valid(body: Mapping[str, Any]) -> bool:
    try:
        Incident.model_validate(body)
    except ValueError:
        return False
    return True


def _pack(body: Mapping[str, Any]) -> bytes:
    """A body as compact JSON, without managedFields (the API server's field
    bookkeeping, which the operator never reads): a waiting body costs a
    fraction of its parsed form."""
    metadata = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
    return json.dumps({**body, "metadata": metadata}, separators=(",", ":")).encode()


def _unpack(packed: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(packed)
    return body
