"""Wait for something to come true, by polling: the dev stack, the demo, the
bench and the tests all wait this one way."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_SECONDS = 0.1


class GaveUp(TimeoutError):
    """What was waited for did not come true in time (a TimeoutError of our own,
    so a caller can tell it from a timeout raised by the check itself)."""


def wait_for(what: str, check: Callable[[], T | None], *, timeout: float = 30.0) -> T:
    """Call `check` until it returns something truthy, and return that; raise
    GaveUp, saying what we waited for and what `check` said last, after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(POLL_SECONDS)
    raise GaveUp(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
