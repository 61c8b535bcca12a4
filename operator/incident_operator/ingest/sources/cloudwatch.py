"""CloudWatch alarms delivered by EventBridge: `POST /alerts/cloudwatch`.

The body is an EventBridge event of detail-type "CloudWatch Alarm State Change",
as the CloudWatch User Guide documents it ("Alarm events and EventBridge"). Alarms
of three shapes arrive there:

- single-metric alarms: `configuration.metrics[0].metricStat.metric` holds the
  namespace, the metric name and the dimensions;
- metric-math (and anomaly-detection) alarms: several metrics, some with an
  `expression`; the dimensions come from the entries that have a `metricStat`;
- composite alarms: `configuration.alarmRule` and no metrics at all.

Every well-formed alarm becomes an Incident. One that names no service (an
RDS alarm, a composite alarm without tags) is named after its metric
namespace (`AWS/RDS`), or `unknown`, with `platform: none`: it is assessed,
notified and escalated like any other, and never acted on. Refusing it would
lose it, since EventBridge does not retry a 4xx.

The same alarm also reaches us through SNS (`sns.py`), in another envelope. Both
envelopes are read into a `CloudWatchAlarm`, which this module turns into a
`ReceivedAlarm`, so that an alarm means the same thing whichever way it came.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from ...models import MAX_TEXT, Alarm, AlarmState, ServiceRef, Source
from .. import severity
from ..alarm import AlarmSource, Delivery, InvalidAlarm, ReceivedAlarm
from ._common import (
    MAX_ARN,
    MAX_DELIVERY_ID,
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
    raw_json,
)

STATE_CHANGE = "CloudWatch Alarm State Change"

# Where the service and its cluster are named, most trusted first. ECS metrics
# (AWS/ECS and Container Insights) carry ClusterName and ServiceName dimensions.
SERVICE_DIMENSION = "ServiceName"
CLUSTER_DIMENSION = "ClusterName"
SERVICE_TAGS = ("ServiceName", "service", "Service", "ecs_service")
CLUSTER_TAGS = ("ClusterName", "cluster", "Cluster", "ecs_cluster")
# `service=checkout` / `cluster=prod` in an alarm's name or description: how a
# composite alarm (no metrics, so no dimensions) without tags names its service.
# ECS names are letters, digits, `-` and `_`, so a trailing period is not taken.
_MARKER = re.compile(
    r"(?<![A-Za-z0-9_])(service|servicename|cluster|clustername)=([A-Za-z0-9_-]+)",
    re.IGNORECASE,
)
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")

# The service of an alarm that names none, and no namespace either.
UNKNOWN_SERVICE = "unknown"


# --- The payload: an EventBridge event --------------------------------------


class Metric(Payload):
    namespace: str | None = None
    name: str | None = None
    dimensions: dict[str, str] = Field(default_factory=dict)


class MetricStat(Payload):
    metric: Metric
    period: int | None = None
    stat: str | None = None


class MetricQuery(Payload):
    id: str | None = None
    metric_stat: MetricStat | None = Field(None, alias="metricStat")
    expression: str | None = None
    label: str | None = None
    return_data: bool | None = Field(None, alias="returnData")


class Configuration(Payload):
    description: str | None = None
    metrics: list[MetricQuery] = Field(default_factory=list)
    alarm_rule: str | None = Field(None, alias="alarmRule")


class State(Payload):
    value: AlarmState
    reason: str | None = None
    reason_data: str | None = Field(None, alias="reasonData")
    timestamp: datetime | None = None


class Detail(Payload):
    alarm_name: str = Field(alias="alarmName", min_length=1)
    state: State
    previous_state: State | None = Field(None, alias="previousState")
    configuration: Configuration = Field(default_factory=Configuration)
    # Present when the alarm propagates its tags to its actions and events.
    alarm_tags: Any = Field(None, alias="alarmTags")


class CloudWatchEvent(Payload):
    """An EventBridge "CloudWatch Alarm State Change" event."""

    version: str
    id: str = Field(min_length=1)
    detail_type: str = Field(alias="detail-type")
    source: str
    account: str
    time: datetime
    region: str
    resources: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    detail: Detail


# --- One CloudWatch alarm, whatever the envelope -----------------------------


@dataclass(frozen=True, kw_only=True)
class Query:
    """One metric of an alarm's definition, in the same terms for both envelopes."""

    namespace: str | None = None
    name: str | None = None
    dimensions: Mapping[str, str] = field(default_factory=dict)
    expression: str | None = None
    label: str | None = None
    returns: bool = True


def pick_metric(queries: Sequence[Query]) -> str | None:
    """The metric an alarm watches: what its result is made of, in a few words.

    A single-metric alarm watches its metric. A math alarm watches the expression
    whose data it returns (by its label if it has one); an anomaly-detection alarm
    returns both its metric and the band, and the metric is the better name.
    """
    for query in queries:
        if query.returns and query.name:
            return query.name
    for query in queries:
        if query.returns and (query.label or query.expression):
            return query.label or query.expression
    return next((query.name for query in queries if query.name), None)


def merged_dimensions(queries: Iterable[Query]) -> dict[str, str]:
    """The dimensions of every metric of the alarm; the first metric wins a conflict."""
    merged: dict[str, str] = {}
    for query in queries:
        for key, value in query.dimensions.items():
            merged.setdefault(key, value)
    return merged


def find_target(
    *,
    dimensions: Mapping[str, str],
    tags: Mapping[str, str],
    texts: Iterable[str | None],
) -> tuple[str | None, str | None]:
    """The (service, cluster) an alarm is about.

    Each is looked up on its own, in this order: the ECS dimension
    (`ServiceName`, `ClusterName`), then the alarm's tags (`ServiceName`,
    `service`, ...; `ClusterName`, `cluster`, ...), then a `service=<name>` /
    `cluster=<name>` marker in the alarm name or description. Dimensions come
    first because they say what the metric measures, not what someone wrote.
    """
    markers: dict[str, str] = {}
    for text in texts:
        for match in _MARKER.finditer(text or ""):
            kind = "service" if match.group(1).lower().startswith("service") else "cluster"
            markers.setdefault(kind, match.group(2))
    service = first(
        dimensions.get(SERVICE_DIMENSION),
        *(tags.get(key) for key in SERVICE_TAGS),
        markers.get("service"),
    )
    cluster = first(
        dimensions.get(CLUSTER_DIMENSION),
        *(tags.get(key) for key in CLUSTER_TAGS),
        markers.get("cluster"),
    )
    return service, cluster


def read_tags(tags: object) -> dict[str, str]:
    """An alarm's tags as a small string mapping, whatever their shape.

    CloudWatch documents them in events as an object of key-value pairs; the
    `[{"Key": ..., "Value": ...}]` list its APIs use is read too. Tags are
    optional, so anything else is ignored rather than refused.
    """
    pairs: dict[str, object] = {}
    if isinstance(tags, dict):
        pairs = {str(key): value for key, value in tags.items()}
    elif isinstance(tags, list):
        for tag in tags:
            if isinstance(tag, dict):
                key = tag.get("Key", tag.get("key"))
                if key is not None:
                    pairs[str(key)] = tag.get("Value", tag.get("value"))
    return bounded(pairs, max_items=MAX_LABELS)


def arn_region(arn: str) -> str | None:
    """The region code in an ARN (arn:aws:cloudwatch:REGION:ACCOUNT:alarm:NAME)."""
    parts = arn.split(":")
    region = parts[3] if len(parts) > 4 else ""
    return region if _REGION.fullmatch(region) else None


def arn_account(arn: str) -> str | None:
    parts = arn.split(":")
    account = parts[4] if len(parts) > 5 else ""
    return account if account.isdigit() else None


@dataclass(frozen=True, kw_only=True)
class CloudWatchAlarm:
    """What a CloudWatch alarm notification says, read out of its envelope."""

    arn: str
    name: str
    description: str | None
    state: AlarmState
    reason: str | None
    changed_at: datetime | None
    started_at: datetime | None
    queries: Sequence[Query]
    tags: Mapping[str, str]
    account: str | None
    region: str | None

    def received(self, *, source: Source, delivery_id: str | None, raw: str) -> ReceivedAlarm:
        dimensions = merged_dimensions(self.queries)
        named, cluster = find_target(
            dimensions=dimensions, tags=self.tags, texts=(self.name, self.description)
        )
        metric = pick_metric(self.queries)
        namespace = next((query.namespace for query in self.queries if query.namespace), None)
        service = optional_identifier(named, what="service")
        # No service named: the alarm is still an Incident, never acted on.
        platform: Literal["ecs", "none"] = "ecs" if service else "none"
        if not service:
            service = optional_identifier(namespace, what="namespace") or UNKNOWN_SERVICE
        declared = severity.parse(self.tags.get("severity") or self.tags.get("Severity"))
        # The facts first, so that neither a tag of the same name nor too many
        # tags can push them out.
        facts = {
            "namespace": namespace,
            "metric": metric,
            "account": self.account,
            "region": self.region,
        }
        labels = {key: value for key, value in facts.items() if value}
        for key, value in self.tags.items():
            labels.setdefault(key, value)
        summary = "\n".join(text for text in (self.description, self.reason) if text)
        return ReceivedAlarm(
            source=source,
            fingerprint=fit_fingerprint(self.arn),
            delivery_id=clip_optional(delivery_id, MAX_DELIVERY_ID),
            title=name(self.name),
            summary=clip(summary, MAX_TEXT),
            severity=declared or severity.from_text(self.name, self.description),
            service=ServiceRef(
                name=service,
                cluster=optional_identifier(cluster, what="cluster"),
                region=optional_identifier(self.region, what="region", limit=MAX_REGION),
                platform=platform,
            ),
            alarm=Alarm(
                name=name(self.name),
                state=self.state,
                reason=clip_optional(self.reason, MAX_TEXT),
                metric=name(metric) if metric else None,
                dimensions=bounded(dimensions, max_items=MAX_DIMENSIONS),
                starts_at=self.started_at,
                arn=clip(self.arn, MAX_ARN),
                raw=raw,
            ),
            labels=bounded(labels, max_items=MAX_LABELS),
            observed_at=self.changed_at,
        )


def alarm_start(
    *,
    state: AlarmState,
    changed_at: datetime | None,
    previous: AlarmState | None,
    previous_at: datetime | None,
) -> datetime | None:
    """When the trouble began, when the notification tells.

    Going into ALARM: now. Leaving ALARM: when the previous state began, which was
    the ALARM state. Otherwise the notification does not say.
    """
    if state == "ALARM":
        return changed_at
    if previous == "ALARM":
        return previous_at
    return None


# --- The source ---------------------------------------------------------------


def read_event(event: CloudWatchEvent) -> CloudWatchAlarm:
    """The alarm an EventBridge event is about. Refuses events that are not state changes."""
    if event.source != "aws.cloudwatch" or event.detail_type != STATE_CHANGE:
        raise InvalidAlarm(
            f"not a CloudWatch alarm state change (source {event.source!r}, detail-type "
            f"{event.detail_type!r}): route only source 'aws.cloudwatch' and detail-type "
            f"{STATE_CHANGE!r} events here"
        )
    detail = event.detail
    previous = detail.previous_state
    changed_at = detail.state.timestamp or event.time
    return CloudWatchAlarm(
        arn=event.resources[0],
        name=detail.alarm_name,
        description=detail.configuration.description,
        state=detail.state.value,
        reason=detail.state.reason,
        changed_at=changed_at,
        started_at=alarm_start(
            state=detail.state.value,
            changed_at=changed_at,
            previous=previous.value if previous else None,
            previous_at=previous.timestamp if previous else None,
        ),
        queries=[_query(query) for query in detail.configuration.metrics],
        tags=read_tags(detail.alarm_tags),
        account=event.account,
        region=event.region,
    )


def _query(query: MetricQuery) -> Query:
    metric = query.metric_stat.metric if query.metric_stat else None
    return Query(
        namespace=metric.namespace if metric else None,
        name=metric.name if metric else None,
        dimensions=metric.dimensions if metric else {},
        expression=query.expression,
        label=query.label,
        # Omitted means true, as in the PutMetricAlarm API.
        returns=query.return_data is not False,
    )


class CloudWatchSource(AlarmSource):
    """`POST /alerts/cloudwatch`: EventBridge events, fingerprinted by alarm ARN."""

    name: Source = "cloudwatch"
    path: str = "/alerts/cloudwatch"
    payload: type[BaseModel] = CloudWatchEvent
    alert_by_alert: bool = False

    def parse(self, payload: BaseModel) -> Delivery:
        event = expect(payload, CloudWatchEvent)
        alarm = read_event(event)
        return Delivery(
            [alarm.received(source=self.name, delivery_id=event.id, raw=raw_json(event))]
        )


source = CloudWatchSource()
