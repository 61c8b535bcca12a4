"""Alertmanager webhook payloads (version 4) into one ReceivedAlarm per alert."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from incident_operator.ingest.alarm import InvalidAlarm, ReceivedAlarm
from incident_operator.ingest.sources import alertmanager

Load = Callable[[str], dict[str, Any]]


def parse(body: dict[str, Any]) -> list[ReceivedAlarm]:
    delivery = alertmanager.source.parse(alertmanager.AlertmanagerWebhook.model_validate(body))
    assert delivery.refused == [], delivery.refused
    alarms = delivery.alarms
    for alarm in alarms:
        alarm.incident_spec()  # every value fits the CRD's bounds
    return alarms


def one_alert(body: dict[str, Any], **labels: str) -> dict[str, Any]:
    """The payload with only its first alert, whose labels are replaced."""
    alert = {**body["alerts"][0], "labels": labels}
    return {**body, "alerts": [alert]}


def test_one_alarm_per_alert(payload: Load) -> None:
    firing, resolved = parse(payload("alertmanager-webhook.json"))

    assert firing.source == resolved.source == "alertmanager"
    assert firing.fingerprint == "alertmanager:4b1c2a9d0e3f5a67"
    assert resolved.fingerprint == "alertmanager:9f8e7d6c5b4a3210"
    # One firing, whatever how often it is sent: fingerprint, status, startsAt.
    assert firing.delivery_id is not None
    assert firing.delivery_id.startswith("4b1c2a9d0e3f5a67/firing/")
    assert resolved.delivery_id is not None and "/resolved/" in resolved.delivery_id
    assert firing.alarm.state == "ALARM"
    assert resolved.alarm.state == "OK"


def test_firing_alert(payload: Load) -> None:
    body = payload("alertmanager-webhook.json")
    [alarm, _] = parse(body)

    assert (
        alarm.title == "ECSServiceHighErrorRate: checkout answers 5xx to more than 5% of requests"
    )
    assert alarm.alarm.name == "ECSServiceHighErrorRate"
    assert alarm.service.name == "checkout"
    assert alarm.service.cluster == "prod"
    assert alarm.service.region == "eu-west-1"
    assert alarm.severity == "critical"
    assert alarm.summary == (
        "checkout answers 5xx to more than 5% of requests\n"
        "checkout in prod: 7.3% of requests failed over the last 5 minutes."
    )
    assert (
        alarm.alarm.reason == "checkout in prod: 7.3% of requests failed over the last 5 minutes."
    )
    started = datetime(2026, 3, 2, 9, 31, 26, 739266, tzinfo=UTC)
    assert alarm.alarm.starts_at == started
    assert alarm.observed_at == started  # endsAt is Go's zero time: not used
    assert alarm.labels == body["alerts"][0]["labels"]
    assert alarm.alarm.dimensions == body["alerts"][0]["labels"]


def test_resolved_alert(payload: Load) -> None:
    [_, alarm] = parse(payload("alertmanager-webhook.json"))

    assert alarm.service.name == "payments"  # from ecs_service
    assert alarm.service.cluster == "prod"  # from ecs_cluster
    assert alarm.severity == "medium"  # "warning"
    assert alarm.title == "ECSServiceHighLatency: payments p99 latency above 2s"
    assert alarm.alarm.starts_at == datetime(2026, 3, 2, 8, 55, 11, tzinfo=UTC)
    assert alarm.observed_at == datetime(2026, 3, 2, 9, 40, 11, tzinfo=UTC)  # endsAt


def test_raw_is_the_notification_with_only_its_own_alert(payload: Load) -> None:
    body = payload("alertmanager-webhook.json")
    body["orgId"] = 1  # Grafana adds fields of its own
    firing, resolved = parse(body)

    for alarm, alert in ((firing, body["alerts"][0]), (resolved, body["alerts"][1])):
        assert alarm.alarm.raw is not None
        raw = json.loads(alarm.alarm.raw)
        assert raw["groupKey"] == body["groupKey"]
        assert raw["orgId"] == 1
        assert [a["fingerprint"] for a in raw["alerts"]] == [alert["fingerprint"]]


@pytest.mark.parametrize(
    ("labels", "service"),
    [
        ({"service": "a", "ecs_service": "b", "service_name": "c", "job": "d"}, "a"),
        ({"ecs_service": "b", "service_name": "c", "job": "d"}, "b"),
        ({"service_name": "c", "job": "d"}, "c"),
        ({"job": "d"}, "d"),
        ({"service": " ", "job": "d"}, "d"),  # blank is not a name
    ],
)
def test_service_label_order(payload: Load, labels: dict[str, str], service: str) -> None:
    [alarm] = parse(one_alert(payload("alertmanager-webhook.json"), alertname="X", **labels))
    assert alarm.service.name == service


def test_cluster_label_order(payload: Load) -> None:
    body = payload("alertmanager-webhook.json")
    [alarm] = parse(one_alert(body, alertname="X", service="s", cluster="a", ecs_cluster="b"))
    assert alarm.service.cluster == "a"
    [alarm] = parse(one_alert(body, alertname="X", service="s", ecs_cluster="b"))
    assert alarm.service.cluster == "b"
    [alarm] = parse(one_alert(body, alertname="X", service="s"))
    assert alarm.service.cluster is None


def test_an_alert_naming_no_service_is_kept_as_unknown_and_never_acted_on(payload: Load) -> None:
    body = payload("alertmanager-webhook.json")
    body["alerts"][1]["labels"] = {"alertname": "Watchdog", "severity": "none", "cluster": "c1"}
    first, second = parse(body)
    assert first.service.platform == "ecs"
    assert (second.service.name, second.service.platform) == ("unknown", "none")
    assert second.service.cluster == "c1"


def test_one_bad_alert_is_refused_alone(payload: Load) -> None:
    # Alertmanager drops a notification answered with a 4xx: the good alert
    # must not go down with the bad one.
    body = payload("alertmanager-webhook.json")
    body["alerts"][0]["labels"]["service"] = "s" * 1025
    delivery = alertmanager.source.parse(alertmanager.AlertmanagerWebhook.model_validate(body))
    [kept] = delivery.alarms
    assert kept.fingerprint == f"alertmanager:{body['alerts'][1]['fingerprint']}"
    [refused] = delivery.refused
    assert (refused.index, refused.fingerprint) == (0, body["alerts"][0]["fingerprint"])
    assert "refused rather than cut" in refused.message


def test_an_alert_with_text_that_is_not_unicode_is_refused_alone(payload: Load) -> None:
    body = payload("alertmanager-webhook.json")
    body["alerts"][1]["annotations"]["summary"] = "\ud800"
    delivery = alertmanager.source.parse(alertmanager.AlertmanagerWebhook.model_validate(body))
    assert len(delivery.alarms) == 1
    assert [r.index for r in delivery.refused] == [1]


def test_truncation_travels_with_every_alert(payload: Load) -> None:
    body = {**payload("alertmanager-webhook.json"), "truncatedAlerts": 7}
    delivery = alertmanager.source.parse(alertmanager.AlertmanagerWebhook.model_validate(body))
    assert delivery.truncated == 7
    assert {alarm.group_truncated for alarm in delivery.alarms} == {7}


@pytest.mark.parametrize("version", ["3", "5", ""])
def test_other_versions_are_refused(payload: Load, version: str) -> None:
    body = {**payload("alertmanager-webhook.json"), "version": version}
    with pytest.raises(InvalidAlarm, match="version"):
        parse(body)


def test_an_alert_without_fingerprint_is_fingerprinted_by_its_labels(payload: Load) -> None:
    body = payload("alertmanager-webhook.json")
    del body["alerts"][0]["fingerprint"]
    [first, _] = parse(body)
    [again, _] = parse(body)
    body["alerts"][0]["labels"]["instance"] = "10.0.0.7:9100"
    [other, _] = parse(body)

    assert first.fingerprint.startswith("alertmanager:")
    assert first.fingerprint == again.fingerprint
    assert first.fingerprint != other.fingerprint


def test_fingerprints_are_prefixed_so_sources_cannot_collide(payload: Load) -> None:
    body = payload("alertmanager-webhook.json")
    body["alerts"][0]["fingerprint"] = "inc-2026-0042"  # also a generic incident_id
    [alarm, _] = parse(body)
    assert alarm.fingerprint == "alertmanager:inc-2026-0042"


@pytest.mark.parametrize(
    "breakage",
    [
        lambda body: body["alerts"][0].update(status="pending"),
        lambda body: body["alerts"][0].pop("status"),
        lambda body: body["alerts"][0].pop("labels"),
        lambda body: body["alerts"][0]["labels"].update(count=3),
        lambda body: body.pop("alerts"),
        lambda body: body.pop("version"),
    ],
)
def test_what_the_parser_needs_is_validated(
    payload: Load, breakage: Callable[[dict[str, Any]], Any]
) -> None:
    body = payload("alertmanager-webhook.json")
    breakage(body)
    with pytest.raises(ValidationError):
        alertmanager.AlertmanagerWebhook.model_validate(body)


def test_no_alerts_no_alarms(payload: Load) -> None:
    assert parse({**payload("alertmanager-webhook.json"), "alerts": []}) == []


def test_oversized_values_are_clipped_not_refused(payload: Load) -> None:
    body = payload("alertmanager-webhook.json")
    labels = {"alertname": "A" * 300, "service": "checkout"}
    labels.update({f"label{i:03}": "v" * 300 for i in range(100)})
    body["alerts"][0]["labels"] = labels
    body["alerts"][0]["annotations"] = {"summary": "s" * 300, "description": "d" * 5000}
    alarm, _ = parse(body)

    assert len(alarm.title) == 256
    assert alarm.title.endswith("…")
    assert len(alarm.alarm.name) == 256
    assert len(alarm.summary) == 4096
    assert alarm.alarm.reason is not None
    assert len(alarm.alarm.reason) == 4096
    assert len(alarm.labels) == 64
    assert len(alarm.alarm.dimensions) == 32
    assert all(len(value) <= 256 for value in alarm.labels.values())


def test_an_alert_with_deployment_and_namespace_is_about_that_deployment(payload: Load) -> None:
    body = payload("alertmanager-webhook.json")
    # kube-state-metrics' labels: its job is not the workload.
    labels = {"job": "kube-state-metrics", "deployment": "web", "namespace": "shop"}
    [alarm] = parse(one_alert(body, alertname="KubeDeploymentReplicasMismatch", **labels))
    assert (alarm.service.platform, alarm.service.namespace) == ("kubernetes", "shop")
    assert alarm.service.name == "web"
    # A namespace alone names no workload: the service labels decide, as before.
    [alarm] = parse(one_alert(body, alertname="X", job="api", namespace="shop"))
    assert (alarm.service.platform, alarm.service.name) == ("ecs", "api")
