"""The serverless agent's own format: `POST /alert`, kept so that its senders keep working.

    {"incident_id": "optional dedup key",
     "detail": {"service_name": "...", "cluster_name": "...", "summary": "...",
                "alarm_name" or "AlarmName": "...", "severity": "...",
                "Trigger": {"Dimensions": [{"name": "ServiceName", "value": "..."}]}}}

Every field is optional, but a service must be named somewhere.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from ...models import MAX_TEXT, Alarm, ServiceRef, Source
from .. import severity
from ..alarm import AlarmSource, Delivery, ReceivedAlarm
from ._common import (
    MAX_DIMENSIONS,
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

EXPECTED_SERVICE = "a ServiceName entry in detail.Trigger.Dimensions, or detail.service_name"


class Dimension(Payload):
    name: str
    value: str


class Trigger(Payload):
    dimensions: list[Dimension] = Field(default_factory=list, alias="Dimensions")


class Detail(Payload):
    service_name: str | None = None
    cluster_name: str | None = None
    summary: str | None = None
    alarm_name: str | None = None
    # The CloudWatch spelling, which senders forwarding CloudWatch alarms use.
    alarm_name_aws: str | None = Field(None, alias="AlarmName")
    severity: str | None = None
    trigger: Trigger | None = Field(None, alias="Trigger")


class GenericAlert(Payload):
    incident_id: str | None = None
    detail: Detail = Field(default_factory=Detail)


class GenericSource(AlarmSource):
    """`POST /alert`: the legacy format.

    The service and cluster come from the `ServiceName` and `ClusterName`
    dimensions when there are any, else from `detail.service_name` and
    `detail.cluster_name`. The dimensions win when both are given and disagree:
    they are what the monitoring system measured, while the flat fields are
    often filled in by hand or by a template, and go stale.

    The fingerprint is `incident_id` when given, so the sender controls
    deduplication; otherwise a hash of the source, the service and the alarm
    name (`detail.alarm_name`, `detail.AlarmName`, else the summary). Without
    an alarm name or summary, all alerts for a service share one Incident.
    """

    name: Source = "generic"
    path: str = "/alert"
    payload: type[BaseModel] = GenericAlert
    alert_by_alert: bool = False

    def parse(self, payload: BaseModel) -> Delivery:
        alert = expect(payload, GenericAlert)
        detail = alert.detail
        dimensions: dict[str, str] = {}
        for dimension in detail.trigger.dimensions if detail.trigger else []:
            dimensions.setdefault(dimension.name, dimension.value)
        service = optional_identifier(
            first(dimensions.get("ServiceName"), detail.service_name), what="service"
        )
        if not service:
            raise no_service("the alert", EXPECTED_SERVICE)
        cluster = first(dimensions.get("ClusterName"), detail.cluster_name)
        alarm_name = first(detail.alarm_name, detail.alarm_name_aws, detail.summary) or ""
        incident_id = first(alert.incident_id)
        fingerprint = incident_id or f"{self.name}:{stable_hash(self.name, service, alarm_name)}"
        title = alarm_name or f"Alert for {service}"
        return Delivery(
            [
                ReceivedAlarm(
                    source=self.name,
                    fingerprint=fit_fingerprint(fingerprint),
                    title=name(title),
                    summary=clip(detail.summary or "", MAX_TEXT),
                    severity=severity.parse(detail.severity)
                    or severity.from_text(detail.alarm_name, detail.alarm_name_aws, detail.summary),
                    service=ServiceRef(
                        name=service, cluster=optional_identifier(cluster, what="cluster")
                    ),
                    alarm=Alarm(
                        name=name(title),
                        state="ALARM",
                        reason=clip_optional(detail.summary, MAX_TEXT),
                        dimensions=bounded(dimensions, max_items=MAX_DIMENSIONS),
                        raw=raw_json(alert),
                    ),
                )
            ]
        )


source = GenericSource()
