"""Tell every configured channel about a transition, bounded in time, never raising.

Channels run concurrently, each under its own deadline, with retries and
jittered exponential backoff for failures that may pass (a 503, a timeout),
and behind its own circuit breaker. The outcome of all of them becomes one
`Announced`: the fields to merge into status.notifications, and the
`Notified` condition. A failed or skipped channel makes it False with a
reason naming the channel (`JiraFailed`, `SlackCircuitOpen`,
`SlackAndEmailFailed`) and a message saying what went wrong, while the
Incident goes on: the reconciler writes the transition either way. A
channel whose event waits in a paced lane (PagerDuty during a burst) makes
it Unknown (`PagerdutyQueued`), unless another failed: told again later.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .. import metrics
from ..models import Incident
from ..policy import Policy
from . import Announced
from .breaker import CircuitBreaker
from .channel import Channel, ChannelFailed, Told

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    channel: str
    result: Literal["told", "idle", "failed", "open", "queued"]
    told: Told | None = None
    problem: str = ""


class FanOutNotifier:
    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        timeout: float,
        attempts: int,
        breaker_failures: int,
        breaker_cooloff: float,
        backoff: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channels = list(channels)
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self.breakers = {
            channel.name: CircuitBreaker(
                failures=breaker_failures, cooloff=breaker_cooloff, clock=clock
            )
            for channel in self._channels
        }

    @property
    def channels(self) -> list[str]:
        return [channel.name for channel in self._channels]

    async def announce(self, incident: Incident, *, policy: Policy) -> Announced:
        outcomes = await asyncio.gather(
            *(self._one(channel, incident, policy) for channel in self._channels)
        )
        for outcome in outcomes:
            if outcome.result != "idle":
                metrics.NOTIFICATIONS.labels(outcome.channel, outcome.result).inc()
        return summarize(outcomes)

    async def _one(self, channel: Channel, incident: Incident, policy: Policy) -> Outcome:
        name = incident.metadata.get("name")
        if not channel.wants(incident, policy=policy):
            return Outcome(channel.name, "idle")
        breaker = self.breakers[channel.name]
        left = breaker.open_for()
        if left is not None:
            problem = (
                f"skipped: circuit open for another {left:.0f}s after {breaker.failures} "
                f"failures in a row (last: {breaker.last_error})"
            )
            log.warning("notification skipped", extra={"incident": name, "channel": channel.name})
            return Outcome(channel.name, "open", problem=problem)
        try:
            told = await asyncio.wait_for(
                self._with_retries(channel, incident, policy), timeout=self._timeout
            )
        except ChannelFailed as failure:
            problem = str(failure)
        except TimeoutError:
            problem = f"no answer within {self._timeout:g}s"
        except Exception as error:
            # A bug in a channel must not stop the Incident: record it, with
            # the traceback in the log, and carry on.
            log.exception("notification channel crashed", extra={"incident": name})
            problem = f"unexpected {type(error).__name__}: {error}"
        else:
            breaker.succeeded()
            return Outcome(channel.name, "queued" if told.queued else "told", told=told)
        breaker.failed(problem)
        log.warning(
            "notification failed",
            extra={"incident": name, "channel": channel.name, "error": problem},
        )
        return Outcome(channel.name, "failed", problem=problem)

    async def _with_retries(self, channel: Channel, incident: Incident, policy: Policy) -> Told:
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                return await channel.tell(incident, policy=policy)
            except ChannelFailed as failure:
                if not failure.retryable:
                    raise
                if attempt == self._attempts:
                    raise ChannelFailed(
                        f"{failure} (after {attempt} attempts)", retryable=True
                    ) from failure
            # Jittered, so that incidents failing together do not retry in step.
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay *= 2
        raise AssertionError("unreachable")


def summarize(outcomes: Sequence[Outcome]) -> Announced:
    notifications: dict[str, Any] = {}
    notes: list[str] = []
    for outcome in outcomes:
        if outcome.told is not None:
            notifications.update(outcome.told.notifications)
            if outcome.told.note:
                notes.append(f"{outcome.channel}: {outcome.told.note}")
        elif outcome.problem:
            notes.append(f"{outcome.channel}: {outcome.problem}")
    failed = [o.channel.capitalize() for o in outcomes if o.result == "failed"]
    skipped = [o.channel.capitalize() for o in outcomes if o.result == "open"]
    if failed or skipped:
        reason = "And".join([*failed, *skipped]) + ("Failed" if failed else "CircuitOpen")
        return Announced(notifications, "False", reason, "; ".join(notes))
    queued = [o.channel.capitalize() for o in outcomes if o.result == "queued"]
    if queued:
        return Announced(notifications, "Unknown", "And".join(queued) + "Queued", "; ".join(notes))
    return Announced(notifications, "True", "Notified", "; ".join(notes) or "nothing new to tell")
