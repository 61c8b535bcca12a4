"""The ingest webhook against the real API server: every alarm, exactly one Incident."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.routing import request_response as fastapi_request_response
from kubernetes import client
from prometheus_client import CollectorRegistry

from incident_operator import __version__
from incident_operator.config import Settings
from incident_operator.ingest.app import create_app
from incident_operator.ingest.recorder import AlarmRecorder
from incident_operator.ingest.sources import SOURCES
from incident_operator.models import GROUP, VERSION
from webhook_support import (
    alertmanager,
    am_alert,
    eventbridge_alarm,
    generic_alert,
    incidents,
    new_token,
    occurrences,
    webhook,
)

pytestmark = pytest.mark.usefixtures("crds_installed")


def set_phase(api: client.ApiClient, namespace: str, name: str, phase: str) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "incidents", name, {"status": {"phase": phase}}
    )


async def test_generic_alert_creates_one_incident(api: client.ApiClient, namespace: str) -> None:
    async with webhook(api, namespace, token=new_token()) as http:
        response = await http.post("/alert", json=generic_alert("checkout"))
    assert response.status_code == 200, response.text
    [ref] = response.json()["incidents"]
    assert ref["result"] == "created" and ref["occurrences"] == 1
    [incident] = incidents(api, namespace)
    assert incident["metadata"]["name"] == ref["name"]
    assert incident["metadata"]["name"].startswith("checkout-")
    assert incident["spec"]["source"] == "generic"
    assert incident["spec"]["service"] == {"name": "checkout", "cluster": "prod", "platform": "ecs"}
    # One write: the creation is the first occurrence; status is the operator's.
    assert "status" not in incident and occurrences(incident) == 1
    labels = incident["metadata"]["labels"]
    assert labels[f"{GROUP}/service"] == "checkout"
    assert labels[f"{GROUP}/source"] == "generic"


async def test_repeat_counts_on_the_open_incident(api: client.ApiClient, namespace: str) -> None:
    async with webhook(api, namespace, token=new_token()) as http:
        for _ in range(3):
            response = await http.post("/alerts/cloudwatch", json=eventbridge_alarm())
            assert response.status_code == 200, response.text
    [incident] = incidents(api, namespace)
    assert incident["status"]["occurrences"] == 3
    assert incident["status"]["firstSeen"] == incident["metadata"]["creationTimestamp"]
    first, last = (
        datetime.fromisoformat(incident["status"][key].replace("Z", "+00:00"))
        for key in ("firstSeen", "lastSeen")
    )
    assert last >= first
    assert incident["spec"]["fingerprint"].startswith("arn:aws:cloudwatch:")


async def test_redelivered_event_counts_once(api: client.ApiClient, namespace: str) -> None:
    event = eventbridge_alarm(event_id="5d0f6a4c-0000-4000-8000-000000000001")
    async with webhook(api, namespace, token=new_token()) as http:
        first = await http.post("/alerts/cloudwatch", json=event)
        again = await http.post("/alerts/cloudwatch", json=event)
    assert first.json()["incidents"][0]["result"] == "created"
    assert again.status_code == 200
    assert again.json()["incidents"][0]["result"] == "redelivery"
    [incident] = incidents(api, namespace)
    assert occurrences(incident) == 1


async def test_a_request_retried_with_its_idempotency_key_counts_once(
    api: client.ApiClient, namespace: str
) -> None:
    # The generic format has no delivery id of its own: a sender that retries
    # (its first answer timed out) names the request instead.
    body = generic_alert("checkout")
    async with webhook(api, namespace, token=new_token()) as http:
        first = await http.post("/alert", json=body, headers={"Idempotency-Key": "req-1"})
        retried = await http.post("/alert", json=body, headers={"Idempotency-Key": "req-1"})
        again = await http.post("/alert", json=body, headers={"Idempotency-Key": "req-2"})
        unnamed = await http.post("/alert", json=body)
        refused = await http.post("/alert", json=body, headers={"Idempotency-Key": "a b"})
    results = [r.json()["incidents"][0]["result"] for r in (first, retried, again, unnamed)]
    assert results == ["created", "redelivery", "counted", "counted"]
    assert refused.status_code == 422, refused.text
    [incident] = incidents(api, namespace)
    assert occurrences(incident) == 3


async def test_concurrent_deliveries_across_replicas_count_exactly(
    api: client.ApiClient, namespace: str
) -> None:
    token = new_token()
    replicas = [webhook(api, namespace, token=token) for _ in range(3)]
    try:
        posts = [
            replicas[i % 3].post("/alert", json=generic_alert("storm", incident_id="INC-1"))
            for i in range(60)
        ]
        answers = await asyncio.gather(*posts)
    finally:
        for replica in replicas:
            await replica.aclose()
    assert [a.status_code for a in answers] == [200] * 60
    [incident] = incidents(api, namespace)
    assert incident["status"]["occurrences"] == 60
    results = [a.json()["incidents"][0]["result"] for a in answers]
    assert results.count("created") >= 1 and results.count("redelivery") == 0


async def test_recovery_marks_alarm_ok_without_counting(
    api: client.ApiClient, namespace: str
) -> None:
    async with webhook(api, namespace, token=new_token()) as http:
        await http.post("/alerts/cloudwatch", json=eventbridge_alarm())
        ok = await http.post("/alerts/cloudwatch", json=eventbridge_alarm(state="OK"))
    assert ok.json()["incidents"][0]["result"] == "recovered"
    [incident] = incidents(api, namespace)
    assert incident["status"]["alarmState"] == "OK"
    assert occurrences(incident) == 1


async def test_recovery_with_nothing_open_creates_nothing(
    api: client.ApiClient, namespace: str
) -> None:
    async with webhook(api, namespace, token=new_token()) as http:
        ok = await http.post("/alerts/cloudwatch", json=eventbridge_alarm(state="OK"))
        resolved = await http.post(
            "/alerts/alertmanager", json=alertmanager(am_alert("abc123", status="resolved"))
        )
    assert ok.status_code == resolved.status_code == 200
    assert ok.json()["incidents"][0]["result"] == "no_open_incident"
    assert incidents(api, namespace) == []


async def test_repeat_after_resolution_opens_a_new_incident(
    api: client.ApiClient, namespace: str
) -> None:
    async with webhook(api, namespace, token=new_token()) as http:
        first = (await http.post("/alerts/cloudwatch", json=eventbridge_alarm())).json()
        name = first["incidents"][0]["name"]
        set_phase(api, namespace, name, "Resolved")
        second = (await http.post("/alerts/cloudwatch", json=eventbridge_alarm())).json()
        third = (await http.post("/alerts/cloudwatch", json=eventbridge_alarm())).json()
    assert second["incidents"][0] == {"name": f"{name}-2", "result": "created", "occurrences": 1}
    assert third["incidents"][0]["name"] == f"{name}-2"
    counts = {i["metadata"]["name"]: occurrences(i) for i in incidents(api, namespace)}
    assert counts == {name: 1, f"{name}-2": 2}


async def test_redelivery_after_resolution_does_not_reopen(
    api: client.ApiClient, namespace: str
) -> None:
    event = eventbridge_alarm(event_id="5d0f6a4c-0000-4000-8000-000000000002")
    async with webhook(api, namespace, token=new_token()) as http:
        name = (await http.post("/alerts/cloudwatch", json=event)).json()["incidents"][0]["name"]
        set_phase(api, namespace, name, "Resolved")
        again = await http.post("/alerts/cloudwatch", json=event)
    assert again.json()["incidents"][0]["result"] == "redelivery"
    assert len(incidents(api, namespace)) == 1


async def test_alertmanager_one_incident_per_fingerprint(
    api: client.ApiClient, namespace: str
) -> None:
    async with webhook(api, namespace, token=new_token()) as http:
        firing = alertmanager(am_alert("aaa111"), am_alert("bbb222", service="ledger"))
        response = await http.post("/alerts/alertmanager", json=firing)
        resolved = alertmanager(am_alert("aaa111", status="resolved"), status="resolved")
        await http.post("/alerts/alertmanager", json=resolved)
    assert response.status_code == 200, response.text
    assert response.json()["received"] == 2
    by_service = {i["spec"]["service"]["name"]: i for i in incidents(api, namespace)}
    assert set(by_service) == {"payments", "ledger"}
    assert by_service["payments"]["status"]["alarmState"] == "OK"
    # Untouched since its creation, which was the firing alert.
    assert "status" not in by_service["ledger"]
    assert by_service["payments"]["spec"]["severity"] == "critical"


async def test_unsafe_names_are_sanitized(api: client.ApiClient, namespace: str) -> None:
    service = "Checkout API: 5xx > 1% (EU)/prod"
    async with webhook(api, namespace, token=new_token()) as http:
        response = await http.post("/alert", json=generic_alert(service))
    assert response.status_code == 200, response.text
    [incident] = incidents(api, namespace)
    assert incident["metadata"]["name"].startswith("checkout-api-5xx-1-eu-prod-")
    assert incident["spec"]["service"]["name"] == service
    assert incident["metadata"]["labels"][f"{GROUP}/service"] == "Checkout_API_5xx_1_EU_prod"


# --- bad input: a clear 4xx, and nothing created -------------------------------


@pytest.mark.parametrize(
    ("headers", "content", "status", "code"),
    [
        ({"Content-Type": "text/plain"}, b'{"detail": {}}', 415, "unsupported_media_type"),
        ({"Content-Type": "application/json"}, b'{"detail": ', 400, "invalid_json"),
        ({"Content-Type": "application/json"}, b'{"detail": "x"}', 422, "invalid_payload"),
        ({"Content-Type": "application/json"}, b"[1, 2]", 422, "invalid_payload"),
        ({"Content-Type": "application/json"}, b'{"detail": {}}', 422, "invalid_alarm"),
        ({"Authorization": "Bearer wrong", "Content-Type": "application/json"}, None, 401, None),
        ({"Authorization": "", "Content-Type": "application/json"}, None, 401, "unauthorized"),
    ],
)
async def test_bad_requests_are_refused_and_change_nothing(
    api: client.ApiClient,
    namespace: str,
    headers: dict[str, str],
    content: bytes | None,
    status: int,
    code: str | None,
) -> None:
    body = content if content is not None else json.dumps(generic_alert()).encode()
    async with webhook(api, namespace, token=new_token()) as http:
        response = await http.post("/alert", content=body, headers=headers)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["message"]
    if code:
        assert answer["error"] == code
    assert incidents(api, namespace) == []


def with_fastapis_own_handlers(app: FastAPI) -> FastAPI:
    """The app with FastAPI's own request handling on each alarm route, in
    place of the lean handler the webhook serves them with."""
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path in {s.path for s in SOURCES}:
            route.app = fastapi_request_response(route.get_route_handler())
    return app


_TOKEN = new_token()
_DEEP = b"[" * 70 + b"]" * 70
_JSON = {"Content-Type": "application/json"}
_AUTH = {"Authorization": f"Bearer {_TOKEN}", **_JSON}
# (path, headers, body): every way a request can be refused before it is
# recorded, and requests that are recorded.
_CORPUS: list[tuple[str, dict[str, str], bytes]] = [
    ("/alert", _AUTH, b'{"detail": '),
    ("/alert", _AUTH, _DEEP),
    ("/alert", _AUTH, b"\xff\xfe\x00"),
    ("/alert", _AUTH, b""),
    ("/alert", _JSON, b'{"detail": {}}'),
    ("/alert", {"Authorization": "Basic eDp5", **_JSON}, b'{"detail": {}}'),
    ("/alert", {"Authorization": "Bearer", **_JSON}, b'{"detail": {}}'),
    ("/alert", {"Authorization": "bearer wrong", **_JSON}, b'{"detail": {}}'),
    ("/alert", _JSON, b'{"detail": '),  # no token, and bad JSON: JSON is judged first
    ("/alert", _AUTH, b'{"detail": "x"}'),
    ("/alert", _AUTH, b"[1, 2]"),
    ("/alert", _AUTH, b"null"),
    ("/alert", _AUTH, b'{"detail": {}}'),
    ("/alert", {"Idempotency-Key": "a b", **_AUTH}, b'{"detail": "x"}'),
    ("/alert", {"Idempotency-Key": "a b", **_AUTH}, b""),
    ("/alert", {"Idempotency-Key": "k" * 129, **_AUTH}, json.dumps(generic_alert()).encode()),
    (
        "/alert",
        {"Authorization": f"BEARER {_TOKEN}", **_JSON},
        json.dumps(generic_alert()).encode(),
    ),
    ("/alert", {"Idempotency-Key": "req-1", **_AUTH}, json.dumps(generic_alert("b")).encode()),
    ("/alerts/cloudwatch", _AUTH, b'{"source": 1}'),
    ("/alerts/cloudwatch", _AUTH, json.dumps(eventbridge_alarm()).encode()),
    ("/alerts/alertmanager", _AUTH, b'{"alerts": "x"}'),
    ("/alerts/alertmanager", _AUTH, json.dumps(alertmanager(am_alert("parity"))).encode()),
    ("/alerts/sns", {"Content-Type": "text/plain"}, b'{"Type": '),
    ("/alerts/sns", {"Content-Type": "text/plain"}, b'{"Type": "Nothing"}'),
    ("/alerts/sns", _JSON, b""),
]


async def test_the_alarm_routes_answer_every_request_as_fastapis_own_handling_would(
    api: client.ApiClient, namespace: str
) -> None:
    """The lean handler (ingest/app.py) skips FastAPI's dependency solving:
    request by request, the answer (status, body, headers that matter) is
    what FastAPI's own handling of the same route gives, and so are the
    Incidents written."""
    other = client.CoreV1Api(api).create_namespace({"metadata": {"name": f"{namespace}-fa"}})
    twin = other.metadata.name

    def make(space: str) -> FastAPI:
        settings = Settings(incident_namespace=space, ingest_tokens=_TOKEN)
        recorder = AlarmRecorder(api=api, namespace=space)
        return create_app(
            settings=settings, recorder=recorder, api=api, registry=CollectorRegistry()
        )

    answers = []
    for app in (make(namespace), with_fastapis_own_handlers(make(twin))):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as http:
            seen = []
            for path, headers, body in _CORPUS:
                response = await http.post(path, content=body, headers=headers)
                kept = {k: response.headers.get(k) for k in ("www-authenticate", "retry-after")}
                seen.append((path, response.status_code, response.json(), kept))
            answers.append(seen)
    lean, fastapis = answers
    for mine, theirs in zip(lean, fastapis, strict=True):
        assert mine == theirs
    statuses = [status for _, status, _, _ in lean]
    assert {400, 401, 422, 200} <= set(statuses), statuses
    assert len(incidents(api, namespace)) == len(incidents(api, twin)) == 4


async def test_oversized_bodies_get_413(api: client.ApiClient, namespace: str) -> None:
    huge = generic_alert(summary="x" * 300_000)
    async with webhook(api, namespace, token=new_token(), ingest_max_body_bytes=64 * 1024) as http:
        declared = await http.post("/alert", json=huge)

        async def chunks():  # no Content-Length: counted while it streams
            for _ in range(100):
                yield b" " * 1024

        streamed = await http.post(
            "/alert", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert declared.status_code == 413 and declared.json()["error"] == "payload_too_large"
    assert streamed.status_code == 413 and streamed.json()["error"] == "payload_too_large"
    assert incidents(api, namespace) == []


async def test_rotated_tokens_are_all_valid(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    old, new, from_file = new_token(), new_token(), new_token()
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"{from_file}\n")
    async with webhook(
        api, namespace, token=f"{old},{new}", ingest_tokens_file=tokens_file
    ) as http:
        statuses = []
        for token in (old, new, from_file):
            response = await http.post(
                "/alert",
                json=generic_alert(),
                headers={"Authorization": f"Bearer {token}"},
            )
            statuses.append(response.status_code)
        tokens_file.write_text("rotated-out\n")
        revoked = await http.post(
            "/alert", json=generic_alert(), headers={"Authorization": f"Bearer {from_file}"}
        )
    assert statuses == [200, 200, 200]
    assert revoked.status_code == 401


async def test_api_server_unreachable_answers_503(namespace: str) -> None:
    from kubernetes.client import ApiClient, Configuration

    configuration = Configuration(host="https://127.0.0.1:9")  # nothing listens there
    dead = ApiClient(configuration)
    async with webhook(dead, namespace, token=new_token()) as http:
        response = await http.post("/alert", json=generic_alert())
        ready = await http.get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.json()["error"] == "unavailable"
    assert ready.status_code == 503


async def test_service_endpoints(api: client.ApiClient, namespace: str) -> None:
    async with webhook(api, namespace, token=new_token(), ingest_docs_enabled=True) as http:
        await http.post("/alert", json=generic_alert())
        await http.post("/alert", json=generic_alert())
        root, health, ready = (
            await http.get("/"),
            await http.get("/health"),
            await http.get("/readyz"),
        )
        metrics = (await http.get("/metrics")).text
        spec = (await http.get("/openapi.json")).json()
    assert root.status_code == health.status_code == ready.status_code == 200
    assert health.json() == {"status": "healthy", "version": __version__}
    assert __version__ == "0.1.0"  # the package's own, as installed
    assert 'incident_alarms_received_total{outcome="created",source="generic"} 1.0' in metrics
    assert 'incident_alarms_received_total{outcome="counted",source="generic"} 1.0' in metrics
    assert 'incident_alarm_dedup_hits_total{kind="occurrence",source="generic"} 1.0' in metrics
    assert "incident_ingest_seconds_bucket" in metrics
    paths = set(spec["paths"])
    assert {"/alert", "/alerts/cloudwatch", "/alerts/sns", "/alerts/alertmanager"} <= paths
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


async def test_an_incident_deleted_by_hand_is_recreated_not_a_500(
    api: client.ApiClient, namespace: str
) -> None:
    async with webhook(api, namespace, token=new_token()) as http:
        first = (await http.post("/alert", json=generic_alert("gone"))).json()
        name = first["incidents"][0]["name"]
        await http.post("/alert", json=generic_alert("gone"))  # the webhook now knows it
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "incidents", name
        )
        again = await http.post("/alert", json=generic_alert("gone"))
    assert again.status_code == 200, again.text
    assert again.json()["incidents"][0] == {"name": name, "result": "created", "occurrences": 1}


async def test_alertmanager_repeat_of_one_firing_counts_once(
    api: client.ApiClient, namespace: str
) -> None:
    # Alertmanager re-sends a firing alert every repeat_interval, and senders
    # retry whole requests: the same firing (same startsAt) is counted once.
    body = alertmanager(am_alert("ccc333"))
    async with webhook(api, namespace, token=new_token()) as http:
        first = await http.post("/alerts/alertmanager", json=body)
        again = await http.post("/alerts/alertmanager", json=body)
        refired = alertmanager({**am_alert("ccc333"), "startsAt": "2026-11-29T11:00:00Z"})
        third = await http.post("/alerts/alertmanager", json=refired)
    assert first.json()["incidents"][0]["result"] == "created"
    assert again.json()["incidents"][0]["result"] == "redelivery"
    assert third.json()["incidents"][0] == {
        "name": first.json()["incidents"][0]["name"], "result": "counted", "occurrences": 2,
    }  # fmt: skip


# --- alerts per request (issue 12, item 9) -------------------------------------


async def test_a_request_with_more_alerts_than_the_limit_is_refused_whole(
    api: client.ApiClient, namespace: str
) -> None:
    over = alertmanager(*(am_alert(f"over{i}", service=f"svc{i}") for i in range(6)))
    at = alertmanager(*(am_alert(f"at{i}", service=f"svc{i}") for i in range(5)))
    async with webhook(api, namespace, token=new_token(), ingest_max_alerts_per_request=5) as http:
        refused = await http.post("/alerts/alertmanager", json=over)
        assert refused.status_code == 413, refused.text
        assert incidents(api, namespace) == []  # nothing written, not even the first five
        accepted = await http.post("/alerts/alertmanager", json=at)
    assert refused.json()["error"] == "too_many_alerts"
    assert "6 alerts" in refused.json()["message"]
    assert "INGEST_MAX_ALERTS_PER_REQUEST" in refused.json()["message"]
    assert accepted.status_code == 200, accepted.text
    assert len(incidents(api, namespace)) == 5


async def test_the_default_limit_is_100_alerts(api: client.ApiClient, namespace: str) -> None:
    # 1,000 alerts in one 200 KB request made 1,000 Incidents and held the
    # sender for 17 s; 101 are refused at once.
    body = alertmanager(*(am_alert(f"{i:040x}", service=f"svc{i}") for i in range(101)))
    async with webhook(api, namespace, token=new_token()) as http:
        response = await http.post("/alerts/alertmanager", json=body)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "too_many_alerts"
    assert incidents(api, namespace) == []


# --- Alertmanager groups: no alert lost (issue 21) ------------------------------


def incident_by_fingerprint(api: client.ApiClient, namespace: str, fingerprint: str) -> dict:
    return next(
        item
        for item in incidents(api, namespace)
        if item["spec"]["fingerprint"] == f"alertmanager:{fingerprint}"
    )


def metric(text: str, line: str) -> float:
    return next(
        (float(row.rsplit(" ", 1)[1]) for row in text.splitlines() if row.startswith(line)), 0.0
    )


async def test_an_alert_without_a_service_does_not_block_its_group(
    api: client.ApiClient, namespace: str
) -> None:
    # TargetDown{job="api"} and TargetDown{instance="node-7"} share a group;
    # the second names no service. A 422 for the group (which Alertmanager
    # treats as final) lost the first one too.
    named = {**am_alert("td0001"), "labels": {"alertname": "TargetDown", "job": "api"}}
    unnamed = {**am_alert("td0002"), "labels": {"alertname": "TargetDown", "instance": "node-7"}}
    async with webhook(api, namespace, token=new_token()) as http:
        response = await http.post("/alerts/alertmanager", json=alertmanager(named, unnamed))
    assert response.status_code == 200, response.text
    assert [ref["result"] for ref in response.json()["incidents"]] == ["created", "created"]
    api_incident = incident_by_fingerprint(api, namespace, "td0001")
    assert api_incident["spec"]["service"] == {"name": "api", "platform": "ecs"}
    unknown = incident_by_fingerprint(api, namespace, "td0002")
    assert unknown["spec"]["service"] == {"name": "unknown", "platform": "none"}


async def test_a_bad_alert_is_refused_alone_and_reported(
    api: client.ApiClient, namespace: str
) -> None:
    good = am_alert("good01")
    bad = am_alert("bad001", service="s" * 1025)
    async with webhook(api, namespace, token=new_token()) as http:
        response = await http.post("/alerts/alertmanager", json=alertmanager(bad, good))
        metrics = (await http.get("/metrics")).text
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["received"] == 2
    assert [ref["result"] for ref in answer["incidents"]] == ["created"]
    [refused] = answer["refused"]
    assert (refused["alert"], refused["fingerprint"]) == (0, "bad001")
    assert "refused rather than cut" in refused["message"]
    assert [item["spec"]["fingerprint"] for item in incidents(api, namespace)] == [
        "alertmanager:good01"
    ]
    assert metric(metrics, 'incident_ingest_rejected_total{reason="invalid_alert"}') == 1


async def test_a_group_of_bad_alerts_only_is_still_answered_200(
    api: client.ApiClient, namespace: str
) -> None:
    # A 4xx would make Alertmanager drop the notification for good anyway;
    # the answer says what was refused, and nothing is written.
    body = alertmanager(am_alert("bad002", service="s" * 1025))
    async with webhook(api, namespace, token=new_token()) as http:
        response = await http.post("/alerts/alertmanager", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["incidents"] == [] and len(response.json()["refused"]) == 1
    assert incidents(api, namespace) == []


async def test_truncated_alerts_are_noted_on_the_incidents_of_the_group(
    api: client.ApiClient, namespace: str
) -> None:
    truncated = {**alertmanager(am_alert("trunc1")), "truncatedAlerts": 2}
    async with webhook(api, namespace, token=new_token()) as http:
        response = await http.post("/alerts/alertmanager", json=truncated)
        metrics = (await http.get("/metrics")).text
        assert response.status_code == 200, response.text
        assert response.json()["truncated"] == 2
        assert metric(metrics, "incident_alertmanager_alerts_truncated_total") == 2
        noted = incident_by_fingerprint(api, namespace, "trunc1")
        assert noted["status"]["truncatedAlerts"] == 2

        # The group shrank: the next notification is whole, and the note goes.
        whole = alertmanager(am_alert("trunc1"))
        response = await http.post("/alerts/alertmanager", json=whole)
    assert response.json()["incidents"][0]["result"] == "redelivery"
    assert "truncatedAlerts" not in incident_by_fingerprint(api, namespace, "trunc1")["status"]


async def test_a_repeat_of_a_firing_alert_moves_last_seen_without_counting(
    api: client.ApiClient, namespace: str
) -> None:
    body = alertmanager(am_alert("seen01"))
    async with webhook(api, namespace, token=new_token()) as http:
        await http.post("/alerts/alertmanager", json=body)
        await http.post("/alerts/alertmanager", json=alertmanager(am_alert("seen01")))
        before = incident_by_fingerprint(api, namespace, "seen01")["status"]
        await asyncio.sleep(1.2)  # past lastSeen's resolution of a second
        repeat = await http.post("/alerts/alertmanager", json=body)
    after = incident_by_fingerprint(api, namespace, "seen01")["status"]
    assert repeat.json()["incidents"][0]["result"] == "redelivery"
    assert after.get("occurrences", 1) == before.get("occurrences", 1) == 1
    assert datetime.fromisoformat(after["lastSeen"]) > datetime.fromisoformat(before["lastSeen"])


async def test_an_incident_is_named_after_its_plain_service_even_given_an_arn(
    api: client.ApiClient, namespace: str
) -> None:
    arn = "arn:aws:ecs:us-east-1:123456789012:service/demo/payments"
    async with webhook(api, namespace, token=new_token()) as http:
        response = await http.post("/alert", json=generic_alert(arn, incident_id="by-arn"))
    assert response.status_code == 200, response.text
    [incident] = incidents(api, namespace)
    assert incident["metadata"]["name"].startswith("payments-")
    assert incident["metadata"]["labels"]["incident-response.dev/service"] == "payments"
    assert incident["spec"]["service"]["name"] == arn  # what was observed, as it was


def incident_writes(api: client.ApiClient, namespace: str, until_occurrences: int) -> list[str]:
    """The kinds of the Incident watch events, until one shows `until_occurrences`
    (run in a thread; at most 60 s)."""
    from kubernetes import watch

    following = watch.Watch()
    kinds = []
    for event in following.stream(
        client.CustomObjectsApi(api).list_namespaced_custom_object,
        GROUP, VERSION, namespace, "incidents", timeout_seconds=60,
    ):  # fmt: skip
        kinds.append(event["type"])
        if (event["object"].get("status") or {}).get("occurrences") == until_occurrences:
            following.stop()
    return kinds


async def test_a_hot_incident_collects_its_deliveries_into_one_write_per_interval(
    api: client.ApiClient, namespace: str
) -> None:
    """A storm is paced: an Incident written a moment ago takes the deliveries
    that arrive within the interval in one write; an idle one is written at once."""
    watching = asyncio.create_task(asyncio.to_thread(incident_writes, api, namespace, 92))
    await asyncio.sleep(0.5)  # the watch is open
    async with webhook(api, namespace, token=new_token(), ingest_write_interval_seconds=1) as http:
        alarm = generic_alert("storm", incident_id="INC-HOT")
        first = await http.post("/alert", json=alarm)  # new: created at once
        started = asyncio.get_running_loop().time()

        async def later(delay: float) -> float:
            await asyncio.sleep(delay)
            answer = await http.post("/alert", json=alarm)
            assert answer.json()["incidents"][0]["result"] == "counted", answer.text
            return asyncio.get_running_loop().time() - started

        # 90 deliveries over 1.8 s, open loop, as independent senders send.
        answered = await asyncio.gather(*(later(i * 0.02) for i in range(90)))
        await asyncio.sleep(2.5)  # idle for more than the interval
        quiet = asyncio.get_running_loop().time()
        idle = await http.post("/alert", json=alarm)
        idle_took = asyncio.get_running_loop().time() - quiet
    events = await watching
    assert first.json()["incidents"][0]["result"] == "created"
    assert idle.json()["incidents"][0]["occurrences"] == 92
    [incident] = incidents(api, namespace)
    assert incident["status"]["occurrences"] == 92
    # One create, then at most one write per second of the storm (1.8 s:
    # two or three), and the idle delivery's own: never one per delivery.
    assert events.count("ADDED") == 1
    assert 3 <= events.count("MODIFIED") <= 4, events
    assert max(answered) < 1.8 + 1 + 1  # none waited much more than an interval
    assert idle_took < 1  # an idle Incident is written at once, not after the interval
