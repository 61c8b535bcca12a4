"""The one shape every alarm source is parsed into."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field
from pydantic_core import PydanticSerializationError

from ..config import Settings
from ..models import Alarm, IncidentSpec, ServiceRef, Severity, Source


class ReceivedAlarm(BaseModel):
    """An alarm as received, normalized across sources.

    `fingerprint` identifies the alarm across deliveries (it becomes the
    Incident's name); `delivery_id` identifies one delivery of it (SNS
    MessageId, EventBridge event id), so a redelivery is never counted twice.
    `alarm.state` is this delivery's state: OK (or resolved) means recovery.
    """

    source: Source
    fingerprint: str = Field(min_length=1, max_length=1024)
    delivery_id: str | None = Field(None, max_length=256)
    title: str = Field(max_length=256)
    summary: str = Field("", max_length=4096)
    severity: Severity
    service: ServiceRef
    alarm: Alarm
    labels: dict[str, str] = Field(default_factory=dict)
    observed_at: datetime | None = None
    # Alertmanager's truncatedAlerts: how many alerts of this alarm's group
    # the notification left out (max_alerts). None: the source has no groups.
    group_truncated: int | None = Field(None, ge=0)

    def incident_spec(self) -> IncidentSpec:
        return IncidentSpec(
            source=self.source,
            fingerprint=self.fingerprint,
            title=self.title,
            summary=self.summary,
            severity=self.severity,
            service=self.service,
            alarm=self.alarm,
            labels=self.labels,
        )


class InvalidAlarm(ValueError):
    """The payload is well-formed JSON of the right shape but not a usable alarm (422)."""


def require_unicode(alarm: ReceivedAlarm) -> ReceivedAlarm:
    """The alarm, if all its text is Unicode; else InvalidAlarm.

    JSON may carry a lone surrogate escape ("\\ud800"): valid JSON, not valid
    text. It would fail later, in a hash or on the wire; it is refused here,
    before anything is written.
    """
    try:
        alarm.model_dump_json()
    except (UnicodeError, PydanticSerializationError) as error:
        raise InvalidAlarm(
            "the payload holds text that is not valid Unicode (a lone surrogate?)"
        ) from error
    return alarm


@dataclass(frozen=True)
class RefusedAlert:
    """One alert of a notification that could not be taken, and why."""

    index: int  # its place in the notification's list of alerts
    fingerprint: str | None
    message: str


@dataclass
class Delivery:
    """What one request delivered: its alarms, and for a notification about a
    group of alerts, the alerts refused one by one and how many the sender
    left out (Alertmanager's truncatedAlerts)."""

    alarms: list[ReceivedAlarm]
    refused: list[RefusedAlert] = field(default_factory=list)
    truncated: int = 0


Fetch = Callable[[str], bytes]
"""GETs a URL and returns the body; raises OSError (or ValueError) when it cannot."""


class Refused(Exception):
    """A request a source's verification refuses: answered `status` with the
    JSON error `code` and `message` (and Retry-After when `retry_after` is
    set), counted in the rejected requests under `reason`; nothing recorded."""

    def __init__(
        self, status: int, code: str, message: str, *, reason: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.reason, self.retry_after = status, code, reason, retry_after


@dataclass(frozen=True)
class Handshake:
    """A request that belongs to the sender's protocol and carries no alarm
    (SNS's subscription confirmation): answered 200 with `answer`."""

    answer: dict[str, Any]


@dataclass(frozen=True)
class Posted:
    """The request as sent, for a check that needs more than the payload (a
    signature header over the raw body, as PagerDuty's webhooks sign)."""

    headers: Mapping[str, str]  # case-insensitive
    body: bytes


class Verify(Protocol):
    """Checks a validated payload before it is parsed: returns None for an
    alarm to parse, a Handshake to answer without parsing, or raises Refused.
    Runs on the event loop: blocking work goes to a thread."""

    async def __call__(self, payload: BaseModel, posted: Posted) -> Handshake | None: ...


JSON: tuple[str, ...] = ("application/json",)


class AlarmSource(Protocol):
    """One alarm source: a payload model (validated by FastAPI-free pydantic,
    shown in the OpenAPI) and a parser from it to normalized alarms.

    `alert_by_alert`: the source's requests are notifications about a group
    of alerts (Alertmanager), and such a sender drops a notification that is
    answered with a 4xx, the good alerts with the bad. Each alert is then
    taken or refused on its own, and the request is answered 200 once the
    notification is understood. Other sources refuse a request whole (422).

    How its requests are let in, with defaults for a source that is posted
    JSON with the webhook's bearer token (subclass this to take them):
    `content_types`, the media types it is posted with (the body is read as
    JSON whatever the type says); `bearer_token`, False for a source whose
    requests prove themselves (SNS's signatures); `verification`, what checks
    a payload before it is parsed, built once from the settings, with
    `fetch` for any URL the check must get (a certificate).
    """

    name: Source
    path: str
    payload: type[BaseModel]
    alert_by_alert: bool
    content_types: tuple[str, ...] = JSON
    bearer_token: bool = True

    def verification(self, settings: Settings, *, fetch: Fetch) -> Verify | None:
        return None

    def parse(self, payload: BaseModel) -> Delivery: ...
