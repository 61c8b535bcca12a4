"""The one shape every alarm source is parsed into."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, Field

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


class AlarmSource(Protocol):
    """One alarm source: a payload model (validated by FastAPI-free pydantic,
    shown in the OpenAPI) and a parser from it to normalized alarms."""

    name: Source
    path: str
    payload: type[BaseModel]

    def parse(self, payload: BaseModel) -> list[ReceivedAlarm]: ...
