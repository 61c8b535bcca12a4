"""Prometheus Alertmanager's webhook: `POST /alerts/alertmanager`.

The body is the webhook payload of version "4" (the only one Alertmanager has
sent so far): a group of alerts, each firing or resolved. Each alert becomes one
ReceivedAlarm; the group itself is only how Alertmanager batched them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from ...models import MAX_TEXT, Alarm, AlarmState, ServiceRef, Source
from .. import severity
from ..alarm import InvalidAlarm, ReceivedAlarm
from ._common import (
    MAX_DIMENSIONS,
    MAX_LABELS,
    MAX_REGION,
    Payload,
    bounded,
    clip,
    clip_optional,
    expect,
    first,
    fit_fingerprint,
    name,
    no_service,
    optional_identifier,
    raw_json,
    stable_hash,
)

VERSION = "4"

# Labels naming the service, most specific first: `service` is what most
# alerting rules set; `ecs_service` and `service_name` are what ECS exporters
# and relabelling rules use; `job`, the scrape job, is the last resort.
SERVICE_LABELS = ("service", "ecs_service", "service_name", "job")
CLUSTER_LABELS = ("cluster", "ecs_cluster")
REGION_LABELS = ("region", "aws_region")

EXPECTED_SERVICE = "one of the labels " + ", ".join(SERVICE_LABELS)

STATES: dict[str, AlarmState] = {"firing": "ALARM", "resolved": "OK"}


class Alert(Payload):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = Field(None, alias="startsAt")
    ends_at: datetime | None = Field(None, alias="endsAt")
    generator_url: str | None = Field(None, alias="generatorURL")
    # Sent since Alertmanager 0.19; older ones are fingerprinted by their labels.
    fingerprint: str | None = None


class AlertmanagerWebhook(Payload):
    version: str
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str | None = Field(None, alias="externalURL")
    alerts: list[Alert]


def _known(moment: datetime | None) -> datetime | None:
    # Alertmanager writes Go's zero time (0001-01-01T00:00:00Z) for "not set".
    return moment if moment is not None and moment.year > 1 else None


def _pick(labels: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return first(*(labels.get(name) for name in names))


class AlertmanagerSource:
    """`POST /alerts/alertmanager`: one ReceivedAlarm per alert.

    The fingerprint is the alert's own, prefixed with the source so it cannot
    collide with another source's. Firing is ALARM, resolved is OK. The service
    is the first of the labels `service`, `ecs_service`, `service_name`, `job`;
    the cluster the first of `cluster`, `ecs_cluster`. One alert without a
    service refuses the whole payload, naming that alert.
    """

    name: Source = "alertmanager"
    path: str = "/alerts/alertmanager"
    payload: type[BaseModel] = AlertmanagerWebhook

    def parse(self, payload: BaseModel) -> list[ReceivedAlarm]:
        webhook = expect(payload, AlertmanagerWebhook)
        if webhook.version != VERSION:
            raise InvalidAlarm(
                f"Alertmanager webhook version {webhook.version!r} is not supported: "
                f"expected {VERSION!r}"
            )
        raw = raw_json(webhook)
        return [self._alarm(alert, raw=raw) for alert in webhook.alerts]

    def _alarm(self, alert: Alert, *, raw: str) -> ReceivedAlarm:
        labels, notes = alert.labels, alert.annotations
        alertname = first(labels.get("alertname")) or "alert"
        service = optional_identifier(_pick(labels, SERVICE_LABELS), what="service")
        if not service:
            which = f" (fingerprint {alert.fingerprint})" if alert.fingerprint else ""
            raise no_service(f"alert {alertname!r}{which}", EXPECTED_SERVICE)
        # Alertmanager's own fingerprint is a hash of the label set; so is ours.
        fingerprint = first(alert.fingerprint) or stable_hash(
            *(part for label in sorted(labels.items()) for part in label)
        )
        summary = first(notes.get("summary"))
        description = first(notes.get("description"), notes.get("message"))
        state = STATES[alert.status]
        starts_at = _known(alert.starts_at)
        # Alertmanager re-sends a firing alert every repeat_interval, and a
        # sender retries a whole request after a failure: either way it is the
        # same firing (same startsAt), counted once. A new firing counts again.
        delivery = f"{fingerprint}/{alert.status}/{starts_at.isoformat()}" if starts_at else None
        return ReceivedAlarm(
            source=self.name,
            fingerprint=fit_fingerprint(f"{self.name}:{fingerprint}"),
            delivery_id=clip_optional(delivery, 256),
            title=name(f"{alertname}: {summary}" if summary else alertname),
            summary=clip("\n".join(text for text in (summary, description) if text), MAX_TEXT),
            severity=severity.normalize(labels.get("severity")),
            service=ServiceRef(
                name=service,
                cluster=optional_identifier(_pick(labels, CLUSTER_LABELS), what="cluster"),
                region=optional_identifier(
                    _pick(labels, REGION_LABELS), what="region", limit=MAX_REGION
                ),
            ),
            alarm=Alarm(
                name=name(alertname),
                state=state,
                reason=clip_optional(description or summary, MAX_TEXT),
                dimensions=bounded(labels, max_items=MAX_DIMENSIONS),
                starts_at=starts_at,
                raw=raw,
            ),
            labels=bounded(labels, max_items=MAX_LABELS),
            observed_at=_known(alert.ends_at) if state == "OK" else _known(alert.starts_at),
        )


source = AlertmanagerSource()
