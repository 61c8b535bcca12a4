"""A receiver of outbound webhooks on loopback: checks each event's signature.

It answers 401 to an event whose `X-Incident-Operator-Signature` does not
verify (with the `verify` function it is given: the README's, in the
tests), 415 to one that is not `application/cloudevents+json`, and 204 to a
good one, which it keeps; `fail(503, times=n)` scripts failures first.
Deliveries of the same event id are all kept (`received`); `events()`
dedupes them as a receiver would.

Register with `pytest_plugins = ["fakes.receiver"]` for the `receiver` fixture.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from fakes.loopback import Answer, Call, Served

Verify = Callable[[str, bytes, str, float], bool]  # (secret, body, header, now)


def _hmac_verify(secret: str, body: bytes, header: str, now: float) -> bool:
    import hashlib
    import hmac

    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if abs(now - int(parts.get("t", "0"))) > 300:
        return False
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts.get("v1", ""))


@dataclass
class Receiver(Served):
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    verify: Verify = _hmac_verify
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: list[Call] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    _failures: deque[int] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, status: int = 503, *, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * times)

    def events(self) -> list[dict[str, Any]]:
        """Each event once, in the order first received."""
        with self._lock:
            seen: dict[str, dict[str, Any]] = {}
            for event in self.received:
                seen.setdefault(event["id"], event)
            return list(seen.values())

    def _serve(self, call: Call) -> Answer:
        with self._lock:
            self.calls.append(call)
            if self._failures:
                return Answer(self._failures.popleft(), {"error": "scripted"})
        if not call.headers.get("content-type", "").startswith("application/cloudevents+json"):
            return Answer(415, {"error": "not a structured CloudEvent"})
        header = call.headers.get("x-incident-operator-signature", "")
        try:
            valid = self.verify(self.secret, call.body, header, time.time())
        except (KeyError, ValueError):
            valid = False
        with self._lock:
            if not valid:
                self.refused.append(call)
                return Answer(401, {"error": "bad signature"})
            self.received.append(json.loads(call.body))
        return Answer(204, b"")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    fake = Receiver().start()
    try:
        yield fake
    finally:
        fake.stop()
