"""Prometheus Alertmanager's webhook: `POST /alerts/alertmanager`.

The body is the webhook payload of version "4" (the only one Alertmanager has
sent so far): a group of alerts, each firing or resolved. Each alert becomes one
ReceivedAlarm; the group itself is only how Alertmanager batched them.

Alertmanager drops a notification answered with a 4xx, the whole group, and
sends it again every group_interval while the group changes. So alerts are
taken one by one: one that cannot be taken is refused alone (and listed in
the answer), never its siblings. An alert that names no service is taken
too: service `unknown`, `platform: none`, notified and escalated, never
acted on. How many alerts the notification left out (`truncatedAlerts`,
from `max_alerts`) travels with each alert, onto its Incident.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from ...models import MAX_RAW_ALARM, MAX_TEXT, Alarm, AlarmState, ServiceRef, Source
from .. import severity
from ..alarm import (
    AlarmSource,
    Delivery,
    InvalidAlarm,
    ReceivedAlarm,
    RefusedAlert,
    require_unicode,
)
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
    optional_identifier,
    stable_hash,
)

VERSION = "4"

# Labels naming the service, most specific first: `service` is what most
# alerting rules set; `ecs_service` and `service_name` are what ECS exporters
# and relabelling rules use; `job`, the scrape job, is the last resort.
SERVICE_LABELS = ("service", "ecs_service", "service_name", "job")
CLUSTER_LABELS = ("cluster", "ecs_cluster")
REGION_LABELS = ("region", "aws_region")

# The service of an alert that names none.
UNKNOWN_SERVICE = "unknown"

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
    truncated_alerts: int = Field(0, ge=0, alias="truncatedAlerts")
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


class AlertmanagerSource(AlarmSource):
    """`POST /alerts/alertmanager`: one ReceivedAlarm per alert.

    The fingerprint is the alert's own, prefixed with the source so it cannot
    collide with another source's. Firing is ALARM, resolved is OK. An alert
    with both a `deployment` and a `namespace` label (kube-state-metrics' and
    most Kubernetes alerting rules') is about that Kubernetes Deployment
    (platform kubernetes). Otherwise the service is the first of the labels
    `service`, `ecs_service`, `service_name`, `job`; the cluster the first of
    `cluster`, `ecs_cluster`; an alert with none of the service labels is
    about service `unknown` (platform none).
    """

    name: Source = "alertmanager"
    path: str = "/alerts/alertmanager"
    payload: type[BaseModel] = AlertmanagerWebhook
    alert_by_alert: bool = True

    def parse(self, payload: BaseModel) -> Delivery:
        webhook = expect(payload, AlertmanagerWebhook)
        if webhook.version != VERSION:
            raise InvalidAlarm(
                f"Alertmanager webhook version {webhook.version!r} is not supported: "
                f"expected {VERSION!r}"
            )
        # Each alert's raw text is its notification with only itself in it:
        # the group's context without its siblings (one alert's bad text
        # cannot spoil the others; a group of 100 is not stored 100 times).
        envelope = webhook.model_dump(
            mode="json", by_alias=True, exclude_unset=True, exclude={"alerts"}
        )
        delivery = Delivery([], truncated=webhook.truncated_alerts)
        for index, alert in enumerate(webhook.alerts):
            own = alert.model_dump(mode="json", by_alias=True, exclude_unset=True)
            raw = clip(
                json.dumps(
                    {**envelope, "alerts": [own]}, separators=(",", ":"), ensure_ascii=False
                ),
                MAX_RAW_ALARM,
            )
            try:
                received = self._alarm(alert, raw=raw, truncated=webhook.truncated_alerts)
                delivery.alarms.append(require_unicode(received))
            except (InvalidAlarm, ValidationError) as refused:
                delivery.refused.append(RefusedAlert(index, alert.fingerprint, str(refused)))
        return delivery

    def _alarm(self, alert: Alert, *, raw: str, truncated: int) -> ReceivedAlarm:
        labels, notes = alert.labels, alert.annotations
        alertname = first(labels.get("alertname")) or "alert"
        service = optional_identifier(_pick(labels, SERVICE_LABELS), what="service")
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
            service=_workload(labels)
            or ServiceRef(
                name=service or UNKNOWN_SERVICE,
                platform="ecs" if service else "none",
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
            group_truncated=truncated,
        )


source = AlertmanagerSource()


def _workload(labels: dict[str, str]) -> ServiceRef | None:
    """The Kubernetes Deployment an alert names (`deployment` and `namespace` labels)."""
    deployment = optional_identifier(first(labels.get("deployment")), what="deployment")
    namespace = first(labels.get("namespace"))
    if not deployment or not namespace:
        return None
    return ServiceRef(
        name=deployment,
        platform="kubernetes",
        namespace=optional_identifier(namespace, what="namespace", limit=63),
    )
