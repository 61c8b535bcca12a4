"""A fake PagerDuty on loopback: the Events API v2, and webhook v3 deliveries.

`POST /v2/enqueue` as PagerDuty documents it: a JSON event with a known
`routing_key`, an `event_action` (trigger, acknowledge, resolve), a
`dedup_key` of at most 255 characters, and for a trigger a `payload` with
`summary`, `source` and one of the four severities; 202
`{status, message, dedup_key}` for a good one, 400 `{status: "invalid
event", errors}` for a bad one. Alerts are kept by (routing key, dedup_key)
with PagerDuty's semantics: a trigger for an open alert is deduplicated
into it, one for none (or a resolved one) opens a new PagerDuty incident;
acknowledge and resolve change an open alert.

Rate limit: at most `limit` events per `window` seconds per routing key,
429 past it (PagerDuty: about 120 a minute); tests scale the window down.
`outage(503)` and `fail(500, times=n)` script failures, `lose("enqueue")`
acts on an event and answers nothing.

`webhook(...)` builds a signed v3 delivery (`incident.acknowledged` for an
alert) as PagerDuty sends one: `X-PagerDuty-Signature: v1=<hex HMAC-SHA256
of the body>`.

Register with `pytest_plugins = ["fakes.pagerduty"]` for the `pagerduty` fixture.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from fakes.loopback import Answer, Call, Served

ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")


@dataclass
class Alert:
    routing_key: str
    dedup_key: str
    incident: str  # the PagerDuty incident's id
    status: str = "triggered"
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakePagerDuty(Served):
    routing_keys: set[str] = field(default_factory=lambda: {secrets.token_hex(16)})
    limit: int = 120
    window: float = 60.0
    accepted: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (when, event)
    throttled: int = 0
    alerts: dict[tuple[str, str], Alert] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    _outage: int | None = None
    _failures: deque[int] = field(default_factory=deque)
    _recent: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def routing_key(self) -> str:
        return next(iter(self.routing_keys))

    @property
    def events_url(self) -> str:
        return f"{self.url}/v2/enqueue"

    # --- scripting -------------------------------------------------------------

    def outage(self, status: int = 503) -> None:
        self._outage = status

    def recover(self) -> None:
        self._outage = None

    def fail(self, status: int = 500, *, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * times)

    # --- reading -----------------------------------------------------------------

    def events(self, action: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e for _, e in self.accepted if action is None or e["event_action"] == action]

    def incidents(self) -> int:
        """PagerDuty incidents opened (a deduplicated trigger opens none)."""
        with self._lock:
            return len({alert.incident for alert in self.alerts.values()})

    def alert(self, dedup_key: str, routing_key: str | None = None) -> Alert:
        return self.alerts[(routing_key or self.routing_key, dedup_key)]

    def busiest_window(self) -> int:
        """The most events accepted for one routing key within any `window` seconds."""
        with self._lock:
            by_key: dict[str, list[float]] = {}
            for when, event in self.accepted:
                by_key.setdefault(event["routing_key"], []).append(when)
        most = 0
        for times in by_key.values():
            start = 0
            for end, at in enumerate(times):
                while at - times[start] >= self.window:
                    start += 1
                most = max(most, end - start + 1)
        return most

    # --- serving -----------------------------------------------------------------

    def _serve(self, call: Call) -> Answer:
        with self._lock:
            self.calls.append(call)
            if self._outage is not None:
                return Answer(self._outage, {"status": "unavailable"})
            if self._failures:
                return Answer(self._failures.popleft(), {"status": "error"})
        if call.method != "POST" or call.path != "/v2/enqueue":
            return Answer(404, {"status": "not found"})
        try:
            event = json.loads(call.body)
        except ValueError:
            return _invalid("Event object is invalid: not JSON")
        problems = _problems(event, self.routing_keys)
        if problems:
            return _invalid(*problems)
        now = time.monotonic()
        with self._lock:
            recent = self._recent.setdefault(event["routing_key"], deque())
            while recent and now - recent[0] >= self.window:
                recent.popleft()
            if len(recent) >= self.limit:
                self.throttled += 1
                too_fast = "Requests for this service are arriving too quickly."
                return Answer(429, {"status": "throttle event", "message": too_fast})
            recent.append(now)
            self.accepted.append((now, event))
            self._apply(event)
        processed = {"status": "success", "message": "Event processed"}
        answer = Answer(202, {**processed, "dedup_key": event["dedup_key"]})
        return self._late("enqueue", answer)

    def _apply(self, event: dict[str, Any]) -> None:
        key = (event["routing_key"], event["dedup_key"])
        alert = self.alerts.get(key)
        action = event["event_action"]
        if action == "trigger":
            if alert is None or alert.status == "resolved":
                alert = self.alerts[key] = Alert(*key, incident=f"Q{next(self._ids):06d}")
        elif alert is None or alert.status == "resolved":
            return  # nothing open to change: PagerDuty drops it
        else:
            alert.status = "acknowledged" if action == "acknowledge" else "resolved"
        alert.events.append(event)


def _problems(event: Any, keys: set[str]) -> list[str]:
    if not isinstance(event, dict):
        return ["Event object is invalid"]
    problems = []
    if event.get("routing_key") not in keys:
        problems.append("Invalid routing key")
    if event.get("event_action") not in ACTIONS:
        problems.append("'event_action' is invalid")
    dedup = event.get("dedup_key")
    if not isinstance(dedup, str) or not dedup or len(dedup) > 255:
        problems.append("'dedup_key' must be a string of at most 255 characters")
    if event.get("event_action") == "trigger":
        payload = event.get("payload") or {}
        for name in ("summary", "source"):
            if not isinstance(payload.get(name), str) or not payload[name]:
                problems.append(f"'payload.{name}' is missing or blank")
        if payload.get("severity") not in SEVERITIES:
            problems.append("'payload.severity' is invalid (must be one of critical, error, "
                            "warning or info)")  # fmt: skip
        if len(str(payload.get("summary", ""))) > 1024:
            problems.append("'payload.summary' is longer than 1024 characters")
    return problems


def _invalid(*errors: str) -> Answer:
    return Answer(400, {"status": "invalid event", "message": "Event object is invalid",
                        "errors": list(errors)})  # fmt: skip


def webhook(
    secret: str, *, dedup_key: str, event_type: str = "incident.acknowledged",
    agent: str = "Alice Oncall", other_secrets: tuple[str, ...] = (),
) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    """A v3 webhook delivery about the incident of `dedup_key`: (body, headers)."""
    body = json.dumps({
        "event": {
            "id": "01" + secrets.token_hex(12).upper(),
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": "2026-11-30T10:05:00.000Z",
            "agent": {"html_url": "https://example.pagerduty.com/users/PUSER01", "id": "PUSER01",
                      "self": "https://api.pagerduty.com/users/PUSER01", "summary": agent,
                      "type": "user_reference"},
            "client": None,
            "data": {
                "id": "Q0RIJJZL24RC6W", "type": "incident", "number": 7,
                "self": "https://api.pagerduty.com/incidents/Q0RIJJZL24RC6W",
                "html_url": "https://example.pagerduty.com/incidents/Q0RIJJZL24RC6W",
                "status": event_type.rpartition(".")[2], "incident_key": dedup_key,
                "title": "[critical] checkout is down", "urgency": "high",
                "service": {"id": "PSERV01", "summary": "checkout", "type": "service_reference"},
            },
        }
    }).encode()  # fmt: skip
    signatures = [
        "v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest()
        for s in (*other_secrets, secret)
    ]
    return body, {
        "Content-Type": "application/json",
        "X-PagerDuty-Signature": ",".join(signatures),
        "X-Webhook-Id": secrets.token_hex(8),
    }


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    """A fresh fake PagerDuty per test; `.events_url` and `.routing_key` for the operator."""
    fake = FakePagerDuty().start()
    try:
        yield fake
    finally:
        fake.stop()
