"""EventBridge "CloudWatch Alarm State Change" events into ReceivedAlarms."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from incident_operator.ingest.alarm import InvalidAlarm, ReceivedAlarm
from incident_operator.ingest.sources import cloudwatch
from incident_operator.models import MAX_RAW_ALARM
from incident_operator.remediate.target import UnresolvedTarget, resolve

Load = Callable[[str], dict[str, Any]]

ARN = "arn:aws:cloudwatch:eu-west-1:111122223333:alarm:checkout-cpu-high"


def parse(body: dict[str, Any]) -> ReceivedAlarm:
    alarms = cloudwatch.source.parse(cloudwatch.CloudWatchEvent.model_validate(body)).alarms
    assert len(alarms) == 1
    alarm = alarms[0]
    alarm.incident_spec()  # every value fits the CRD's bounds
    return alarm


def test_single_metric_alarm(payload: Load) -> None:
    alarm = parse(payload("cloudwatch-single-metric.json"))

    assert alarm.source == "cloudwatch"
    assert alarm.fingerprint == ARN
    assert alarm.delivery_id == "7f9d5b2e-1c3a-4e8b-9f60-2a4c6d8e0b11"
    assert alarm.title == "checkout-cpu-high"
    assert alarm.service.name == "checkout"
    assert alarm.service.cluster == "prod"
    assert alarm.service.region == "eu-west-1"
    assert alarm.alarm.name == "checkout-cpu-high"
    assert alarm.alarm.arn == ARN
    assert alarm.alarm.state == "ALARM"
    assert alarm.alarm.metric == "CPUUtilization"
    assert alarm.alarm.dimensions == {"ClusterName": "prod", "ServiceName": "checkout"}
    assert alarm.alarm.reason is not None
    assert alarm.alarm.reason.startswith("Threshold Crossed: 3 out of the last 3 datapoints")
    changed = datetime(2026, 3, 2, 9, 15, 30, 412000, tzinfo=UTC)
    assert alarm.observed_at == changed
    assert alarm.alarm.starts_at == changed
    assert alarm.summary.startswith("Checkout tasks use more than 90% CPU\nThreshold Crossed")
    assert alarm.severity == "medium"
    assert alarm.labels == {
        "namespace": "AWS/ECS",
        "metric": "CPUUtilization",
        "account": "111122223333",
        "region": "eu-west-1",
    }


def test_raw_is_the_received_event_as_compact_json(payload: Load) -> None:
    body = payload("cloudwatch-single-metric.json")
    alarm = parse(body)

    assert alarm.alarm.raw is not None
    assert json.loads(alarm.alarm.raw)["detail"]["muteDetail"] == body["detail"]["muteDetail"]
    assert json.loads(alarm.alarm.raw)["id"] == body["id"]
    compact = json.dumps(json.loads(alarm.alarm.raw), separators=(",", ":"), ensure_ascii=False)
    assert alarm.alarm.raw == compact


def test_recovery_is_ok_and_started_when_the_alarm_state_began(payload: Load) -> None:
    body = payload("cloudwatch-single-metric.json")
    body["id"] = "another-delivery"
    body["detail"]["previousState"] = dict(body["detail"]["state"])
    body["detail"]["state"] = {
        "value": "OK",
        "reason": "Threshold Crossed: back under 90",
        "timestamp": "2026-03-02T09:45:00.000+0000",
    }
    alarm = parse(body)

    assert alarm.alarm.state == "OK"
    assert alarm.fingerprint == ARN  # the same Incident as the ALARM delivery
    assert alarm.delivery_id == "another-delivery"
    assert alarm.observed_at == datetime(2026, 3, 2, 9, 45, tzinfo=UTC)
    assert alarm.alarm.starts_at == datetime(2026, 3, 2, 9, 15, 30, 412000, tzinfo=UTC)


def test_insufficient_data_is_a_state_of_its_own(payload: Load) -> None:
    body = payload("cloudwatch-single-metric.json")
    body["detail"]["state"]["value"] = "INSUFFICIENT_DATA"
    alarm = parse(body)

    assert alarm.alarm.state == "INSUFFICIENT_DATA"
    assert alarm.alarm.starts_at is None  # previous state was OK: no trouble began


def test_metric_math_alarm_takes_dimensions_from_its_metrics(payload: Load) -> None:
    alarm = parse(payload("cloudwatch-metric-math.json"))

    assert alarm.service.name == "payments"
    assert alarm.service.cluster == "prod"
    assert alarm.alarm.dimensions == {"ClusterName": "prod", "ServiceName": "payments"}
    # The alarm returns the expression's data: it watches the expression.
    assert alarm.alarm.metric == "Running tasks (% of desired)"
    assert alarm.labels["namespace"] == "ECS/ContainerInsights"
    # Previous state INSUFFICIENT_DATA: it began now.
    assert alarm.alarm.starts_at == alarm.observed_at


def test_the_first_metric_wins_a_dimension_conflict(payload: Load) -> None:
    body = payload("cloudwatch-metric-math.json")
    metrics = body["detail"]["configuration"]["metrics"]
    metrics[2]["metricStat"]["metric"]["dimensions"]["ServiceName"] = "payments-canary"
    alarm = parse(body)

    assert alarm.service.name == "payments"
    assert alarm.alarm.dimensions["ServiceName"] == "payments"


def test_anomaly_detection_alarm_watches_its_metric_not_the_band(payload: Load) -> None:
    alarm = parse(payload("cloudwatch-anomaly-detection.json"))

    assert alarm.alarm.metric == "MemoryUtilization"
    assert alarm.service.name == "search"
    assert (
        alarm.fingerprint == "arn:aws:cloudwatch:eu-west-1:111122223333:alarm:search memory anomaly"
    )


def test_composite_alarm_takes_its_service_from_tags(payload: Load) -> None:
    alarm = parse(payload("cloudwatch-composite.json"))

    assert alarm.fingerprint == "arn:aws:cloudwatch:eu-west-1:111122223333:alarm:payments-degraded"
    assert alarm.service.name == "payments"
    assert alarm.service.cluster == "prod"
    assert alarm.alarm.metric is None
    assert alarm.alarm.dimensions == {}
    assert alarm.severity == "critical"  # the severity tag
    assert alarm.labels["team"] == "payments-oncall"
    assert alarm.labels["account"] == "111122223333"
    assert "metric" not in alarm.labels


def test_a_tag_cannot_hide_a_fact(payload: Load) -> None:
    body = payload("cloudwatch-single-metric.json")
    body["detail"]["alarmTags"] = {"region": "moon-1", "owner": "checkout-team"}
    alarm = parse(body)

    assert alarm.labels["region"] == "eu-west-1"
    assert alarm.labels["owner"] == "checkout-team"


@pytest.mark.parametrize(
    "tags",
    [
        [{"Key": "service", "Value": "payments"}, {"Key": "team", "Value": "payments-oncall"}],
        {"service": "payments", "team": "payments-oncall"},
    ],
)
def test_tags_as_an_object_or_as_a_key_value_list(payload: Load, tags: Any) -> None:
    body = payload("cloudwatch-composite.json")
    body["detail"]["alarmTags"] = tags
    alarm = parse(body)

    assert alarm.service.name == "payments"
    assert alarm.labels["team"] == "payments-oncall"


def test_tags_of_another_shape_are_ignored(payload: Load) -> None:
    body = payload("cloudwatch-composite.json")
    body["detail"]["alarmTags"] = "service=payments"
    body["detail"]["configuration"]["description"] = "no service named here"
    alarm = parse(body)
    assert (alarm.service.name, alarm.service.platform) == ("unknown", "none")


def test_composite_alarm_without_tags_can_name_its_service_in_its_description(
    payload: Load,
) -> None:
    body = payload("cloudwatch-composite.json")
    del body["detail"]["alarmTags"]
    body["detail"]["configuration"]["description"] = (
        "Payments health. service=payments cluster=prod."
    )
    alarm = parse(body)

    assert alarm.service.name == "payments"
    assert alarm.service.cluster == "prod"
    assert alarm.severity == "medium"


def test_composite_alarm_can_name_its_service_in_its_name(payload: Load) -> None:
    body = payload("cloudwatch-composite.json")
    del body["detail"]["alarmTags"]
    body["detail"]["alarmName"] = "degraded service=payments_api"
    alarm = parse(body)

    assert alarm.service.name == "payments_api"
    assert alarm.service.cluster is None  # the app falls back to ECS_CLUSTER_NAME


def test_dimensions_win_over_tags_and_markers(payload: Load) -> None:
    body = payload("cloudwatch-single-metric.json")
    body["detail"]["alarmTags"] = {"service": "from-tag", "cluster": "tag-cluster"}
    body["detail"]["configuration"]["description"] = "service=from-marker"
    alarm = parse(body)

    assert alarm.service.name == "checkout"
    assert alarm.service.cluster == "prod"


def test_tags_win_over_markers_and_fill_a_missing_cluster(payload: Load) -> None:
    body = payload("cloudwatch-single-metric.json")
    dimensions = body["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["dimensions"]
    del dimensions["ClusterName"], dimensions["ServiceName"]
    dimensions["LoadBalancer"] = "app/checkout/50dc6c495c0c9188"
    body["detail"]["alarmTags"] = {"ServiceName": "checkout-api"}
    body["detail"]["configuration"]["description"] = "service=other cluster=blue"
    alarm = parse(body)

    assert alarm.service.name == "checkout-api"
    assert alarm.service.cluster == "blue"
    assert alarm.alarm.dimensions == {"LoadBalancer": "app/checkout/50dc6c495c0c9188"}


def test_an_alarm_naming_no_service_is_named_after_its_namespace_and_never_acted_on(
    payload: Load,
) -> None:
    # EventBridge does not retry a 4xx: refusing this alarm would lose it.
    body = payload("cloudwatch-single-metric.json")
    metric = body["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]
    metric["namespace"] = "AWS/EC2"
    metric["dimensions"] = {"InstanceId": "i-12345678901234567"}
    alarm = parse(body)
    assert alarm.service.name == "AWS/EC2"
    assert alarm.service.platform == "none"
    assert alarm.alarm.dimensions == {"InstanceId": "i-12345678901234567"}
    with pytest.raises(UnresolvedTarget, match="names no service"):
        resolve(alarm.service, default_cluster="demo", default_region="us-east-1")


def test_a_composite_alarm_naming_nothing_is_an_unknown_service(payload: Load) -> None:
    body = payload("cloudwatch-composite.json")
    del body["detail"]["alarmTags"]
    alarm = parse(body)
    assert (alarm.service.name, alarm.service.platform) == ("unknown", "none")


@pytest.mark.parametrize("hidden", ["\0", "\u202e", "\u200b", "\u2028", "\x1b"])
def test_identifiers_lose_hidden_characters(payload: Load, hidden: str) -> None:
    body = payload("cloudwatch-single-metric.json")
    metric = body["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]
    metric["dimensions"] = {
        "ServiceName": f"billing{hidden}worker",
        "ClusterName": f"{hidden}dorp-tsae\u202c",
    }
    body["detail"]["alarmName"] = f"cpu{hidden}high"
    alarm = parse(body)
    assert alarm.service.name == "billingworker"
    assert alarm.service.cluster == "dorp-tsae"
    assert alarm.alarm.name == alarm.title == "cpuhigh"
    assert alarm.alarm.dimensions["ServiceName"] == "billingworker"


def test_a_service_too_long_is_refused_never_cut(payload: Load) -> None:
    body = payload("cloudwatch-single-metric.json")
    metric = body["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]
    metric["dimensions"] = {"ServiceName": "s" * 300, "ClusterName": "demo"}
    assert parse(body).service.name == "s" * 300  # longer than a name, kept whole
    metric["dimensions"] = {"ServiceName": "s" * 1025, "ClusterName": "demo"}
    with pytest.raises(InvalidAlarm, match="refused rather than cut"):
        parse(body)


def test_other_cloudwatch_events_are_refused(payload: Load) -> None:
    body = payload("cloudwatch-single-metric.json")
    body["detail-type"] = "CloudWatch Alarm Configuration Change"
    with pytest.raises(InvalidAlarm, match="CloudWatch Alarm Configuration Change"):
        parse(body)

    body = payload("cloudwatch-single-metric.json")
    body["source"] = "aws.ecs"
    with pytest.raises(InvalidAlarm, match=r"'aws\.ecs'"):
        parse(body)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda body: body["detail"]["state"].update(value="FIRING"),
        lambda body: body.update(resources=[]),
        lambda body: body.update(resources=[""]),
        lambda body: body.pop("resources"),
        lambda body: body["detail"].pop("alarmName"),
        lambda body: body["detail"].pop("state"),
        lambda body: body.update(time="yesterday"),
    ],
)
def test_what_the_parser_needs_is_validated(
    payload: Load, breakage: Callable[[dict[str, Any]], Any]
) -> None:
    body = payload("cloudwatch-single-metric.json")
    breakage(body)
    with pytest.raises(ValidationError):
        cloudwatch.CloudWatchEvent.model_validate(body)


def test_unknown_fields_are_accepted(payload: Load) -> None:
    body = payload("cloudwatch-single-metric.json")
    body["replay-name"] = "replay-2026"
    body["detail"]["state"]["actionsSuppressedBy"] = "Alarm"
    body["detail"]["configuration"]["metrics"][0]["metricStat"]["unit"] = "Percent"
    alarm = parse(body)

    assert alarm.alarm.raw is not None
    assert json.loads(alarm.alarm.raw)["replay-name"] == "replay-2026"


def test_the_same_alarm_keeps_its_fingerprint_across_deliveries(payload: Load) -> None:
    first = payload("cloudwatch-single-metric.json")
    second = payload("cloudwatch-single-metric.json")
    second["id"] = "a-later-event"
    second["detail"]["state"]["reason"] = "Threshold Crossed: other datapoints"

    assert parse(first).fingerprint == parse(second).fingerprint
    assert parse(first).delivery_id != parse(second).delivery_id


def test_severity_from_the_alarm_name(payload: Load) -> None:
    body = payload("cloudwatch-single-metric.json")
    body["detail"]["alarmName"] = "checkout-cpu-high-P1"
    assert parse(body).severity == "critical"

    body["detail"]["alarmTags"] = {"severity": "low"}  # a declared severity wins
    assert parse(body).severity == "low"


def test_oversized_values_are_clipped_not_refused(payload: Load) -> None:
    body = payload("cloudwatch-single-metric.json")
    body["detail"]["alarmName"] = "checkout-" + "x" * 400
    body["detail"]["configuration"]["description"] = "d" * 5000
    body["detail"]["state"]["reason"] = "r" * 5000
    body["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["dimensions"] = {
        "ServiceName": "checkout",
        **{f"Dim{i}": "v" * 300 for i in range(40)},
    }
    body["detail"]["alarmTags"] = {f"tag{i}": str(i) for i in range(100)}
    body["padding"] = "p" * (2 * MAX_RAW_ALARM)
    alarm = parse(body)

    assert len(alarm.title) == 256
    assert alarm.title.endswith("…")
    assert alarm.alarm.name == alarm.title
    assert len(alarm.summary) == 4096
    assert alarm.alarm.reason is not None
    assert len(alarm.alarm.reason) == 4096
    assert len(alarm.alarm.dimensions) == 32
    assert alarm.alarm.dimensions["ServiceName"] == "checkout"
    assert all(len(value) <= 256 for value in alarm.alarm.dimensions.values())
    assert len(alarm.labels) == 64
    assert alarm.labels["namespace"] == "AWS/ECS"  # the facts are never pushed out by tags
    assert alarm.labels["region"] == "eu-west-1"
    assert alarm.alarm.raw is not None
    assert len(alarm.alarm.raw) == MAX_RAW_ALARM
    # The fingerprint is the whole ARN, never clipped.
    assert alarm.fingerprint == body["resources"][0]
