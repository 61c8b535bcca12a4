"""POST /pagerduty/webhook against the real API server: a signed v3
incident.acknowledged acknowledges the Incident the operator paged; a
missing or bad signature is refused (401) and changes nothing; everything
else is answered 200 and changes nothing."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from kubernetes import client

from builders import incident as incident_body
from fakes.pagerduty import webhook as delivery
from incident_operator.models import GROUP, VERSION
from webhook_support import new_token, webhook

pytestmark = pytest.mark.usefixtures("crds_installed")

PATH = "/pagerduty/webhook"


@pytest.fixture
def secret() -> str:
    return secrets.token_hex(16)


@pytest.fixture
async def http(
    api: client.ApiClient, namespace: str, secret: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with webhook(api, namespace, token=new_token(), pagerduty_webhook_secrets=secret) as http:
        del http.headers["Authorization"]  # PagerDuty sends none
        yield http


def put_incident(api: client.ApiClient, namespace: str, *, phase: str = "Escalated") -> str:
    """An escalated Incident; returns its dedup_key (namespace/name@uid)."""
    objects = client.CustomObjectsApi(api)
    body = incident_body(f"checkout-{secrets.token_hex(6)}")
    created = objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "incidents", body)
    name, uid = created["metadata"]["name"], created["metadata"]["uid"]
    key = f"{namespace}/{name}@{uid}"
    status = {"phase": phase, "occurrences": 1, "notifications": {"pagerduty": {"dedupKey": key}}}
    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "incidents", name, {"status": status}
    )
    return key


def status_of(api: client.ApiClient, key: str) -> dict[str, Any]:
    namespace, _, rest = key.partition("/")
    name = rest.partition("@")[0]
    body = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "incidents", name
    )
    return dict(body["status"])


async def test_a_signed_acknowledgement_acknowledges_the_incident(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str
) -> None:
    key = put_incident(api, namespace)
    body, headers = delivery(secret, dedup_key=key, agent="Alice Oncall")
    answer = await http.post(PATH, content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "acknowledged"
    ack = status_of(api, key)["acknowledgement"]
    assert (ack["by"], ack["via"]) == ("Alice Oncall", "pagerduty")
    assert ack["at"].startswith("2026-11-30T10:05:00")
    # Delivered again (PagerDuty retries): nothing more changes.
    again = await http.post(PATH, content=body, headers=headers)
    assert again.json()["result"] == "already_acknowledged"
    assert status_of(api, key)["acknowledgement"] == ack


async def test_during_a_secret_rotation_either_signature_does(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str
) -> None:
    key = put_incident(api, namespace)
    body, headers = delivery(secret, dedup_key=key, other_secrets=(secrets.token_hex(16),))
    assert headers["X-PagerDuty-Signature"].count("v1=") == 2
    answer = await http.post(PATH, content=body, headers=headers)
    assert answer.json()["result"] == "acknowledged"


@pytest.mark.parametrize("fault", ["missing", "wrong secret", "body changed", "not v1"])
async def test_without_a_valid_signature_nothing_changes(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, fault: str
) -> None:
    key = put_incident(api, namespace)
    body, headers = delivery(secret, dedup_key=key)
    if fault == "missing":
        del headers["X-PagerDuty-Signature"]
    elif fault == "wrong secret":
        body, headers = delivery(secrets.token_hex(16), dedup_key=key)
    elif fault == "body changed":
        body = body.replace(b"Alice", b"Mallory")
    else:
        headers["X-PagerDuty-Signature"] = headers["X-PagerDuty-Signature"].replace("v1=", "v0=")
    answer = await http.post(PATH, content=body, headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "unauthorized"
    assert "acknowledgement" not in status_of(api, key)


async def test_without_a_secret_every_delivery_is_refused(
    api: client.ApiClient, namespace: str, secret: str
) -> None:
    key = put_incident(api, namespace)
    body, headers = delivery(secret, dedup_key=key)
    async with webhook(api, namespace, token=new_token()) as http:
        answer = await http.post(PATH, content=body, headers=headers)
    assert answer.status_code == 401
    assert "acknowledgement" not in status_of(api, key)


async def test_what_is_not_ours_is_answered_200_and_changes_nothing(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str
) -> None:
    key = put_incident(api, namespace)
    cases = {
        "ignored": delivery(secret, dedup_key=key, event_type="incident.triggered"),
        "unknown_incident": delivery(secret, dedup_key="some-other-tool-key"),
    }
    # The same name with another uid: a newer Incident, not the one paged.
    stale = key.rpartition("@")[0] + "@00000000-0000-0000-0000-000000000000"
    cases["unknown_incident "] = delivery(secret, dedup_key=stale)
    for result, (body, headers) in cases.items():
        answer = await http.post(PATH, content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == result.strip()
    assert "acknowledgement" not in status_of(api, key)
    resolved = put_incident(api, namespace, phase="Resolved")
    body, headers = delivery(secret, dedup_key=resolved)
    assert (await http.post(PATH, content=body, headers=headers)).json()["result"] == "ended"


async def test_a_signed_body_that_is_not_an_event_is_a_4xx(
    http: httpx.AsyncClient, secret: str
) -> None:
    import hashlib
    import hmac

    body = json.dumps({"messages": []}).encode()
    signature = "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    answer = await http.post(
        PATH, content=body,
        headers={"Content-Type": "application/json", "X-PagerDuty-Signature": signature},
    )  # fmt: skip
    assert answer.status_code == 422
    wrong_type = await http.post(PATH, content=b"x=1", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
