"""Grouping (a ResponsePolicy's `grouping`): a storm of alarms is one Incident
holding them as alerts, exactly, across webhook replicas, on the real API server."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from incident_operator.models import GROUP, VERSION
from webhook_support import (
    eventbridge_alarm,
    generic_alert,
    incidents,
    new_token,
    serve_webhook,
    webhook,
)

pytestmark = pytest.mark.usefixtures("crds_installed")


def group_policy(api: client.ApiClient, namespace: str, **grouping: Any) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "responsepolicies",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResponsePolicy",
         "metadata": {"name": "storms"}, "spec": {"grouping": grouping}},
    )  # fmt: skip


def by_name(api: client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in incidents(api, namespace)}


def alerts(incident: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An Incident's alerts by alarm name (the ARN's last part)."""
    return {a["fingerprint"].rsplit(":", 1)[-1]: a for a in incident["status"]["alerts"]}


async def test_a_storm_of_fifty_alarms_over_two_replicas_is_one_incident_with_fifty_alerts(
    kubeconfig: Path, api: client.ApiClient, namespace: str
) -> None:
    group_policy(api, namespace, by=["cluster"], window="5m")
    token = new_token()
    replicas = [serve_webhook(kubeconfig, namespace, INGEST_TOKENS=token) for _ in range(2)]
    storm = [eventbridge_alarm(f"db-{i}", service=f"svc-{i % 7}") for i in range(50)]
    try:
        async with httpx.AsyncClient(timeout=60) as http:

            async def deliver_all() -> list[httpx.Response]:
                return await asyncio.gather(
                    *(
                        http.post(
                            f"{replicas[i % 2][0]}/alerts/cloudwatch",
                            json={**alarm, "id": f"{alarm['id']}-{round}"},
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        for i, alarm in enumerate(storm)
                    )
                )

            round = 1
            first = await deliver_all()
            round = 2  # the storm goes on: every alarm fires again
            second = await deliver_all()
    finally:
        for _, process in replicas:
            process.terminate()
            process.wait(timeout=10)
    assert [a.status_code for a in first + second] == [200] * 100
    results = [a.json()["incidents"][0]["result"] for a in first]
    assert results.count("created") == 1 and results.count("counted") == 49
    [incident] = incidents(api, namespace)
    assert {a.json()["incidents"][0]["name"] for a in first + second} == {
        incident["metadata"]["name"]
    }
    assert incident["metadata"]["name"].startswith("prod-")
    status = incident["status"]
    assert status["alertCount"] == 50 and status["occurrences"] == 100
    listed = alerts(incident)
    assert set(listed) == {f"db-{i}" for i in range(50)}
    assert {alert["occurrences"] for alert in listed.values()} == {2}
    assert {alert["state"] for alert in listed.values()} == {"ALARM"}
    assert listed["db-3"]["service"] == "svc-3"


async def test_without_grouping_an_incident_holds_its_one_alert(
    api: client.ApiClient, namespace: str
) -> None:
    async with webhook(api, namespace, token=new_token(), grouping=True) as http:
        for _ in range(2):
            assert (await http.post("/alerts/cloudwatch", json=eventbridge_alarm())).is_success
    [incident] = incidents(api, namespace)
    assert incident["status"]["alertCount"] == 1
    [alert] = incident["status"]["alerts"]
    assert alert["fingerprint"] == incident["spec"]["fingerprint"]
    assert (alert["occurrences"], alert["state"]) == (2, "ALARM")
    assert alert["firstSeen"] == incident["status"]["firstSeen"]


async def test_an_incident_from_before_alerts_gets_its_one_alert_from_its_counts(
    api: client.ApiClient, namespace: str
) -> None:
    """What the migration changes: nothing stored; an Incident written before
    Incidents held alerts is read as one alert (its spec, its counts), and
    the next count writes that alert down."""
    async with webhook(api, namespace, token=new_token()) as http:
        assert (await http.post("/alerts/cloudwatch", json=eventbridge_alarm())).is_success
    [incident] = incidents(api, namespace)
    name = incident["metadata"]["name"]
    objects = client.CustomObjectsApi(api)
    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "incidents", name,
        {"status": {"phase": "Escalated", "occurrences": 3, "alarmState": "ALARM",
                    "firstSeen": "2026-11-29T10:00:00Z", "lastSeen": "2026-11-29T10:05:00Z"}},
    )  # fmt: skip
    async with webhook(api, namespace, token=new_token()) as http:
        assert (await http.post("/alerts/cloudwatch", json=eventbridge_alarm())).is_success
    status = by_name(api, namespace)[name]["status"]
    [alert] = status["alerts"]
    assert (alert["occurrences"], status["occurrences"], status["alertCount"]) == (4, 4, 1)
    assert alert["firstSeen"] == "2026-11-29T10:00:00Z"
    assert alert["lastSeen"] > "2026-11-29T10:05:00Z"


@pytest.mark.parametrize(("resolve_when", "after_first"), [("all", "ALARM"), ("any", "OK")])
async def test_a_group_resolves_when_its_alerts_recover(
    api: client.ApiClient, namespace: str, resolve_when: str, after_first: str
) -> None:
    group_policy(api, namespace, by=["service"], resolveWhen=resolve_when)
    async with webhook(api, namespace, token=new_token(), grouping=True) as http:
        for alarm in ("cpu", "memory"):
            answer = await http.post("/alerts/cloudwatch", json=eventbridge_alarm(alarm))
            assert answer.is_success, answer.text
        await http.post("/alerts/cloudwatch", json=eventbridge_alarm("cpu", state="OK"))
        [incident] = incidents(api, namespace)
        listed = alerts(incident)
        assert (listed["cpu"]["state"], listed["memory"]["state"]) == ("OK", "ALARM")
        assert incident["status"]["alarmState"] == after_first
        await http.post("/alerts/cloudwatch", json=eventbridge_alarm("memory", state="OK"))
    [incident] = incidents(api, namespace)
    assert incident["status"]["alarmState"] == "OK"
    assert incident["status"]["occurrences"] == 2  # recoveries are not occurrences


async def test_after_the_window_a_new_alarm_opens_the_next_incident_and_old_ones_count_on_theirs(
    api: client.ApiClient, namespace: str
) -> None:
    group_policy(api, namespace, by=["service"], window="2s")
    async with webhook(api, namespace, token=new_token(), grouping=True) as http:
        first = await http.post("/alerts/cloudwatch", json=eventbridge_alarm("cpu"))
        joined = await http.post("/alerts/cloudwatch", json=eventbridge_alarm("memory"))
        opened = first.json()["incidents"][0]["name"]
        assert joined.json()["incidents"][0] == {
            "name": opened, "result": "counted", "occurrences": 2
        }  # fmt: skip
        created = datetime.fromisoformat(
            by_name(api, namespace)[opened]["metadata"]["creationTimestamp"]
        )
        while (datetime.now(UTC) - created).total_seconds() < 2.5:
            time.sleep(0.1)
        late = await http.post("/alerts/cloudwatch", json=eventbridge_alarm("disk"))
        repeat = await http.post("/alerts/cloudwatch", json=eventbridge_alarm("cpu"))
        gone = await http.post("/alerts/cloudwatch", json=eventbridge_alarm("net", state="OK"))
    assert late.json()["incidents"][0]["name"] == f"{opened}-2"
    assert late.json()["incidents"][0]["result"] == "created"
    assert repeat.json()["incidents"][0]["name"] == opened
    assert gone.json()["incidents"][0]["result"] == "no_open_incident"
    found = by_name(api, namespace)
    assert set(alerts(found[opened])) == {"cpu", "memory"}
    assert alerts(found[opened])["cpu"]["occurrences"] == 2
    assert found[f"{opened}-2"]["spec"]["alarm"]["name"] == "disk"


async def test_only_the_alarms_a_grouping_policy_matches_are_grouped_by_its_attributes(
    api: client.ApiClient, namespace: str
) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "responsepolicies",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResponsePolicy",
         "metadata": {"name": "payments"},
         "spec": {"match": {"services": ["payments*"]}, "grouping": {"by": ["service"]}}},
    )  # fmt: skip
    async with webhook(api, namespace, token=new_token(), grouping=True) as http:
        for service, alarm in [("payments", "a"), ("payments", "b"), ("payments-db", "c"),
                               ("checkout", "d"), ("checkout", "e")]:  # fmt: skip
            answer = await http.post(
                "/alerts/cloudwatch", json=eventbridge_alarm(alarm, service=service)
            )
            assert answer.is_success, answer.text
        # A generic alert of a grouped service joins its group too.
        assert (await http.post("/alert", json=generic_alert("payments"))).is_success
    found = incidents(api, namespace)
    counts = sorted(
        (item["spec"]["service"]["name"], (item.get("status") or {}).get("alertCount", 1))
        for item in found
    )
    assert counts == [("checkout", 1), ("checkout", 1), ("payments", 3), ("payments-db", 1)]
    [grouped] = [item for item in found if item["spec"]["service"]["name"] == "payments"]
    assert grouped["metadata"]["labels"][f"{GROUP}/group"]


async def test_a_policy_created_later_groups_the_alarms_after_it(
    api: client.ApiClient, namespace: str
) -> None:
    async with webhook(api, namespace, token=new_token(), grouping=True) as http:
        for alarm in ("a", "b"):
            assert (await http.post("/alerts/cloudwatch", json=eventbridge_alarm(alarm))).is_success
        group_policy(api, namespace, by=["service"])
        deadline = time.monotonic() + 10
        while True:  # the watch brings the policy within moments
            answer = await http.post("/alerts/cloudwatch", json=eventbridge_alarm("c"))
            name = answer.json()["incidents"][0]["name"]
            if name.startswith("checkout-") and "group" in str(
                by_name(api, namespace)[name]["metadata"]["labels"]
            ):
                break
            assert time.monotonic() < deadline, "the new policy was never applied"
            await asyncio.sleep(0.2)
        joined = await http.post("/alerts/cloudwatch", json=eventbridge_alarm("d"))
    assert joined.json()["incidents"][0]["name"] == name
