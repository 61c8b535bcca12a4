"""A circuit breaker per channel: stop calling a service that keeps failing.

After `failures` failed transitions in a row the breaker opens, and the
channel is skipped (the skip is reported, never silent) for `cooloff`
seconds. Then one call is let through: success closes the breaker, another
failure opens it again for a full cool-off. Counting transitions rather than
HTTP attempts keeps one slow incident from tripping it on its own retries.
In memory: a restarted operator starts with every breaker closed, which is
what a restart is for.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self, *, failures: int, cooloff: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._cooloff = cooloff
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self.last_error = ""

    def open_for(self) -> float | None:
        """Seconds the channel is still to be skipped; None when a call may go through."""
        if self._opened_at is None:
            return None
        left = self._opened_at + self._cooloff - self._clock()
        return left if left > 0 else None

    @property
    def state(self) -> str:
        """closed, open (the channel is skipped), or half_open (the next call is a trial)."""
        if self._opened_at is None:
            return "closed"
        return "open" if self.open_for() is not None else "half_open"

    @property
    def failures(self) -> int:
        return self._failures

    def succeeded(self) -> None:
        self._failures = 0
        self._opened_at = None
        self.last_error = ""

    def failed(self, error: str) -> None:
        self._failures += 1
        self.last_error = error
        if self._failures >= self._threshold:
            # Also after a failed trial call: a full cool-off again.
            self._opened_at = self._clock()
