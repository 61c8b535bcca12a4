"""The serverless agent's `POST /alert` format, and the registry of sources."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from incident_operator.ingest.alarm import InvalidAlarm, ReceivedAlarm
from incident_operator.ingest.sources import SOURCES, generic
from incident_operator.models import Source

Load = Callable[[str], dict[str, Any]]


def parse(body: dict[str, Any]) -> ReceivedAlarm:
    [alarm] = generic.source.parse(generic.GenericAlert.model_validate(body)).alarms
    alarm.incident_spec()  # every value fits the CRD's bounds
    return alarm


def test_legacy_alert(payload: Load) -> None:
    body = payload("generic-alert.json")
    alarm = parse(body)

    assert alarm.source == "generic"
    assert alarm.fingerprint == "inc-2026-0042"  # the sender's incident_id
    assert alarm.title == "checkout-cpu-high"
    assert alarm.summary == "Checkout CPU above 90% for 3 minutes"
    assert alarm.severity == "medium"  # "warning"
    assert alarm.alarm.state == "ALARM"
    assert alarm.alarm.name == "checkout-cpu-high"
    assert alarm.alarm.dimensions == {"ClusterName": "prod", "ServiceName": "checkout"}
    assert alarm.alarm.raw is not None
    assert json.loads(alarm.alarm.raw) == body


def test_dimensions_win_over_flat_fields(payload: Load) -> None:
    # The fixture says service_name "checkout-v1" and cluster_name "staging",
    # and its dimensions say checkout in prod.
    alarm = parse(payload("generic-alert.json"))

    assert alarm.service.name == "checkout"
    assert alarm.service.cluster == "prod"


def test_flat_fields_fill_what_dimensions_lack(payload: Load) -> None:
    body = payload("generic-alert.json")
    body["detail"]["Trigger"]["Dimensions"] = [{"name": "ServiceName", "value": "checkout"}]
    alarm = parse(body)

    assert alarm.service.name == "checkout"
    assert alarm.service.cluster == "staging"


def test_minimal_alert_is_fingerprinted_by_service_and_alarm(payload: Load) -> None:
    body = payload("generic-minimal.json")
    alarm = parse(body)

    assert alarm.service.name == "billing"
    assert alarm.service.cluster is None
    assert alarm.fingerprint.startswith("generic:")
    assert alarm.fingerprint == parse(body).fingerprint
    # Without an alarm name, the summary names the alarm.
    assert alarm.title == alarm.alarm.name == body["detail"]["summary"]


def test_hash_fingerprint_depends_on_service_and_alarm_name(payload: Load) -> None:
    def fingerprint(**detail: str) -> str:
        return parse({"detail": detail}).fingerprint

    base = fingerprint(service_name="billing", alarm_name="queue-backlog")
    assert base == fingerprint(service_name="billing", alarm_name="queue-backlog", summary="x")
    assert base == fingerprint(service_name="billing", AlarmName="queue-backlog")
    assert base == fingerprint(service_name="billing", summary="queue-backlog")
    assert base != fingerprint(service_name="payments", alarm_name="queue-backlog")
    assert base != fingerprint(service_name="billing", alarm_name="queue-latency")
    # alarm_name is preferred to AlarmName, which is preferred to the summary.
    assert base == fingerprint(service_name="billing", alarm_name="queue-backlog", AlarmName="x")
    assert base == fingerprint(service_name="billing", AlarmName="queue-backlog", summary="x")


def test_an_alert_with_no_name_nor_summary_is_titled_by_its_service() -> None:
    alarm = parse({"detail": {"service_name": "billing"}})

    assert alarm.title == alarm.alarm.name == "Alert for billing"
    assert alarm.summary == ""
    assert alarm.alarm.reason is None


def test_blank_incident_id_is_no_incident_id(payload: Load) -> None:
    body = payload("generic-alert.json")
    body["incident_id"] = "  "
    assert parse(body).fingerprint.startswith("generic:")


def test_a_too_long_incident_id_is_hashed_not_cut() -> None:
    long_a = {"incident_id": "a" * 2000 + "1", "detail": {"service_name": "billing"}}
    long_b = {"incident_id": "a" * 2000 + "2", "detail": {"service_name": "billing"}}
    a, b = parse(long_a), parse(long_b)

    assert len(a.fingerprint) <= 1024
    assert a.fingerprint != b.fingerprint  # cutting would have made them equal
    assert a.fingerprint == parse(long_a).fingerprint


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"detail": {}},
        {"detail": {"summary": "something is wrong", "service_name": "  "}},
        {"detail": {"Trigger": {"Dimensions": [{"name": "InstanceId", "value": "i-1"}]}}},
    ],
)
def test_an_alert_naming_no_service_is_refused_with_a_hint(body: dict[str, Any]) -> None:
    with pytest.raises(
        InvalidAlarm, match=r"no service name: expected a ServiceName.*service_name"
    ):
        parse(body)


def test_severity_field_and_markers(payload: Load) -> None:
    body = payload("generic-minimal.json")
    assert parse(body).severity == "medium"
    body["detail"]["summary"] = "[P1] billing is down"
    assert parse(body).severity == "critical"
    body["detail"]["severity"] = "info"  # a declared severity wins
    assert parse(body).severity == "info"


def test_oversized_values_are_clipped_not_refused(payload: Load) -> None:
    body = payload("generic-alert.json")
    body["detail"]["AlarmName"] = "n" * 300
    body["detail"]["summary"] = "s" * 10_000
    body["detail"]["Trigger"]["Dimensions"] += [
        {"name": f"Dim{i}", "value": "v" * 300} for i in range(40)
    ]
    alarm = parse(body)

    assert len(alarm.title) == 256
    assert len(alarm.summary) == 4096
    assert alarm.summary.endswith("…")
    assert len(alarm.alarm.dimensions) == 32
    assert alarm.service.name == "checkout"


def test_unknown_fields_are_accepted_and_kept_in_raw(payload: Load) -> None:
    body = payload("generic-alert.json")
    body["source"] = "legacy-agent"
    body["detail"]["region"] = "eu-west-1"
    alarm = parse(body)

    assert alarm.alarm.raw is not None
    assert json.loads(alarm.alarm.raw)["detail"]["region"] == "eu-west-1"


# --- The registry -----------------------------------------------------------------


def test_every_source_is_registered_once_with_its_path() -> None:
    assert {source.name: source.path for source in SOURCES} == {
        "generic": "/alert",
        "cloudwatch": "/alerts/cloudwatch",
        "sns": "/alerts/sns",
        "alertmanager": "/alerts/alertmanager",
    }
    assert sorted(source.name for source in SOURCES) == sorted(get_args(Source))
    for source in SOURCES:
        assert issubclass(source.payload, BaseModel)


def test_a_source_refuses_another_sources_payload(payload: Load) -> None:
    alert = generic.GenericAlert.model_validate(payload("generic-alert.json"))
    others = [source for source in SOURCES if source is not generic.source]
    for source in others:
        with pytest.raises(TypeError):
            source.parse(alert)
