"""A real Prometheus Alertmanager delivering to a real webhook process.

Each test posts alerts to Alertmanager's `/api/v2/alerts`, as Prometheus does,
and lets the binary decide what to send, when, grouped how and how often:
no payload here is written by hand. The webhook (`incident-operator webhook`)
records Incidents in the local API server; Alertmanager's own metrics say
what it sent and whether the webhook accepted it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from alertmanager_support import Alertmanager, Interop, WebhookServer, alert
from operator_support import get_incident, wait_for
from webhook_support import incidents, occurrences


def _incidents(api: client.ApiClient, namespace: str, count: int) -> list[dict[str, Any]]:
    """Wait until the namespace holds `count` Incidents; return them by service."""

    def enough() -> list[dict[str, Any]] | None:
        found = incidents(api, namespace)
        return found if len(found) >= count else None

    found = wait_for(f"{count} Incident(s)", enough, timeout=20)
    assert len(found) == count, [i["spec"]["service"] for i in found]
    return sorted(found, key=lambda i: i["spec"]["service"]["name"])


def _delivered(manager: Alertmanager, requests: int = 1) -> dict[str, float]:
    """Wait until Alertmanager has made `requests` webhook requests; its counters."""

    def made() -> dict[str, float] | None:
        counters = manager.notifications()
        return counters if counters["requests"] >= requests else None

    return wait_for(f"Alertmanager to make {requests} webhook request(s)", made, timeout=20)


def _accepted_everything(manager: Alertmanager) -> None:
    counters = manager.notifications()
    assert counters["requests_failed"] == 0 and counters["failed"] == 0, (
        f"Alertmanager saw failed notifications: {counters}\n{manager.logs()[-3000:]}"
    )


def _status(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(get_incident(api, namespace, name).get("status") or {})


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _created(webhook: WebhookServer) -> float:
    return webhook.metric(
        "incident_alarms_received_total", source="alertmanager", outcome="created"
    )


def _counted(webhook: WebhookServer) -> float:
    return webhook.metric(
        "incident_alarms_received_total", source="alertmanager", outcome="counted"
    )


def test_a_firing_alert_becomes_an_incident(
    interop: Interop, api: client.ApiClient, namespace: str
) -> None:
    interop.webhook.start()
    manager = interop.start_alertmanager()
    manager.post_alerts(
        [alert(alertname="HighErrorRate", service="checkout", cluster="prod", severity="critical")]
    )
    [incident] = _incidents(api, namespace, 1)
    spec = incident["spec"]
    assert spec["source"] == "alertmanager"
    assert spec["service"]["name"] == "checkout" and spec["service"]["cluster"] == "prod"
    assert spec["service"].get("platform", "ecs") == "ecs"
    assert spec["severity"] == "critical"
    assert spec["alarm"]["name"] == "HighErrorRate" and spec["alarm"]["state"] == "ALARM"
    # The dedup key is the fingerprint Alertmanager gave the alert.
    assert manager.fingerprint(alertname="HighErrorRate") in spec["fingerprint"]
    assert occurrences(incident) == 1
    # Delivered with the bearer token from the file, and answered 2xx.
    _delivered(manager)
    _accepted_everything(manager)
    assert interop.webhook.metric("incident_ingest_rejected_total") == 0


def test_grouped_alerts_arrive_in_one_notification_each_its_own_incident(
    interop: Interop, api: client.ApiClient, namespace: str
) -> None:
    interop.webhook.start()
    manager = interop.start_alertmanager(group_by=["alertname"])
    services = ["checkout", "payments", "search"]
    manager.post_alerts([alert(alertname="HighLatency", service=s) for s in services])
    found = _incidents(api, namespace, 3)
    assert [i["spec"]["service"]["name"] for i in found] == services
    for incident in found:  # each keyed by its own alert's fingerprint
        service = incident["spec"]["service"]["name"]
        assert manager.fingerprint(service=service) in incident["spec"]["fingerprint"]
    # One group, one notification, one request: all three alerts in it.
    counters = _delivered(manager)
    assert counters["sent"] == 1 and counters["requests"] == 1, counters
    _accepted_everything(manager)
    assert _created(interop.webhook) == 3


def test_send_resolved_resolves_the_incident(
    interop: Interop, api: client.ApiClient, namespace: str
) -> None:
    interop.webhook.start()
    manager = interop.start_alertmanager()
    started = datetime.now(UTC) - timedelta(seconds=30)
    manager.post_alerts([alert(starts_at=started, alertname="HighErrorRate", service="payments")])
    [incident] = _incidents(api, namespace, 1)
    name = incident["metadata"]["name"]
    _delivered(manager)
    # Prometheus says the alert ended: Alertmanager sends it as resolved.
    ended = datetime.now(UTC)
    manager.post_alerts(
        [alert(starts_at=started, ends_at=ended, alertname="HighErrorRate", service="payments")]
    )
    wait_for(
        "status.alarmState OK",
        lambda: _status(api, namespace, name).get("alarmState") == "OK",
        timeout=20,
    )
    counters = _delivered(manager, requests=2)
    _accepted_everything(manager)
    assert counters["requests"] == 2, counters
    assert [i["metadata"]["name"] for i in incidents(api, namespace)] == [name]
    assert occurrences(incidents(api, namespace)[0]) == 1


def test_a_repeated_notification_counts_once_and_moves_last_seen(
    interop: Interop, api: client.ApiClient, namespace: str
) -> None:
    interop.webhook.start()
    manager = interop.start_alertmanager(group_interval="1s", repeat_interval="2s")
    manager.post_alerts([alert(alertname="QueueBacklog", service="worker")])
    [incident] = _incidents(api, namespace, 1)
    name = incident["metadata"]["name"]
    created = _time(incident["metadata"]["creationTimestamp"])
    # Alertmanager re-sends the still-firing group every repeat_interval; each
    # repeat says the alert still fires, now: lastSeen moves to its time.
    _delivered(manager, requests=2)

    def last_seen_after(moment: datetime) -> datetime | None:
        seen = _status(api, namespace, name).get("lastSeen")
        return _time(seen) if seen and _time(seen) > moment else None

    first_repeat = wait_for(
        "status.lastSeen at a repeat",
        lambda: last_seen_after(created + timedelta(seconds=1)),
        timeout=10,
    )
    assert first_repeat <= datetime.now(UTC) + timedelta(seconds=1)
    later = wait_for(
        "status.lastSeen to move with the next repeat",
        lambda: last_seen_after(first_repeat),
        timeout=15,
    )
    counters = manager.notifications()
    assert counters["requests"] >= 3, counters
    _accepted_everything(manager)
    # Every repeat is the same firing (same startsAt): never a new occurrence.
    assert later > first_repeat
    assert _status(api, namespace, name).get("occurrences", 1) == 1
    assert [i["metadata"]["name"] for i in incidents(api, namespace)] == [name]
    assert _created(interop.webhook) == 1 and _counted(interop.webhook) == 0


def test_a_notification_retried_after_the_webhook_was_unreachable_counts_once(
    interop: Interop, api: client.ApiClient, namespace: str
) -> None:
    # Alertmanager points at the webhook's port before anything listens there.
    manager = interop.start_alertmanager()
    manager.post_alerts([alert(alertname="HighErrorRate", service="billing")])
    wait_for(
        "Alertmanager's failed attempts",
        lambda: manager.notifications()["requests_failed"] >= 1,
        timeout=15,
    )
    assert incidents(api, namespace) == []
    interop.webhook.start()
    [incident] = _incidents(api, namespace, 1)
    assert incident["spec"]["service"]["name"] == "billing"

    def succeeded() -> bool:
        counters = manager.notifications()
        return counters["requests"] > counters["requests_failed"]

    wait_for("Alertmanager to see a retry succeed", succeeded, timeout=20)
    assert occurrences(incidents(api, namespace)[0]) == 1
    assert _created(interop.webhook) == 1 and _counted(interop.webhook) == 0


def test_an_alert_without_a_service_does_not_block_its_group(
    interop: Interop, api: client.ApiClient, namespace: str
) -> None:
    interop.webhook.start()
    manager = interop.start_alertmanager(group_by=["alertname"])
    # Issue 21's group: one alert names a service (job=api), one names none.
    manager.post_alerts(
        [
            {"labels": {"alertname": "TargetDown", "job": "api"}},
            {"labels": {"alertname": "TargetDown", "instance": "node-7"}},
        ]
    )
    api_incident, unknown = _incidents(api, namespace, 2)
    assert api_incident["spec"]["service"]["name"] == "api"
    assert api_incident["spec"]["service"].get("platform", "ecs") == "ecs"
    assert unknown["spec"]["service"]["name"] == "unknown"
    assert unknown["spec"]["service"]["platform"] == "none"
    assert unknown["spec"]["alarm"]["dimensions"]["instance"] == "node-7"
    counters = _delivered(manager)
    assert counters["requests"] == 1, counters
    _accepted_everything(manager)


def test_an_invalid_alert_is_refused_alone(
    interop: Interop, api: client.ApiClient, namespace: str
) -> None:
    interop.webhook.start()
    manager = interop.start_alertmanager(group_by=["alertname"])
    too_long = "s" * 1100  # longer than any service name or ARN the API accepts
    manager.post_alerts(
        [
            alert(alertname="TargetDown", service="api"),
            alert(alertname="TargetDown", service=too_long),
            alert(alertname="TargetDown", service="db"),
        ]
    )
    found = _incidents(api, namespace, 2)
    assert [i["spec"]["service"]["name"] for i in found] == ["api", "db"]
    # The notification was understood: 2xx, so Alertmanager counts no failure
    # (a 4xx would be permanent and drop the valid alerts with the bad one).
    counters = _delivered(manager)
    assert counters["requests"] == 1, counters
    _accepted_everything(manager)
    wait_for(
        "incident_ingest_rejected_total{reason=invalid_alert}",
        lambda: interop.webhook.metric("incident_ingest_rejected_total", reason="invalid_alert"),
        timeout=5,
    )
    assert interop.webhook.metric("incident_ingest_rejected_total", reason="invalid_alert") == 1
    # The log names the refused alert by Alertmanager's fingerprint.
    refused = manager.fingerprint(service=too_long)
    assert refused in interop.webhook.logs(), interop.webhook.logs()[-3000:]
    assert len(incidents(api, namespace)) == 2


def test_max_alerts_truncation_is_recorded(
    interop: Interop, api: client.ApiClient, namespace: str
) -> None:
    interop.webhook.start()
    manager = interop.start_alertmanager(group_by=["alertname"], max_alerts=1)
    manager.post_alerts([alert(alertname="DiskFull", service=s) for s in ("a", "b", "c")])
    [incident] = _incidents(api, namespace, 1)
    name = incident["metadata"]["name"]
    # The notification carried one alert and said two were left out.
    wait_for(
        "status.truncatedAlerts == 2",
        lambda: _status(api, namespace, name).get("truncatedAlerts") == 2,
        timeout=10,
    )
    counters = _delivered(manager)
    assert counters["requests"] == 1, counters
    _accepted_everything(manager)
    assert interop.webhook.metric("incident_alertmanager_alerts_truncated_total") == 2
    assert any(line.get("truncated") == 2 for line in interop.webhook.log_lines()), (
        interop.webhook.logs()[-3000:]
    )
    assert len(incidents(api, namespace)) == 1
