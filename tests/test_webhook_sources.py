"""A new alarm source with a verification of its own plugs in through the
source interface alone: no route of its own in ingest/app.py.

The source here is the generic format signed as PagerDuty signs its webhooks
(`v1=` and the hex HMAC-SHA256 of the raw body in a header), with a ping
that is answered and records nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

import httpx
import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from alertmanager_support import metric
from incident_operator.config import Settings
from incident_operator.ingest.alarm import (
    AlarmSource,
    Delivery,
    Fetch,
    Handshake,
    Posted,
    Refused,
    Verify,
)
from incident_operator.ingest.app import create_app
from incident_operator.ingest.recorder import AlarmRecorder
from incident_operator.ingest.sources import SOURCES, generic
from webhook_support import generic_alert, incidents

pytestmark = pytest.mark.usefixtures("crds_installed")


class SignatureCheck:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    async def __call__(self, payload: BaseModel, posted: Posted) -> Handshake | None:
        expected = "v1=" + hmac.new(self.secret, posted.body, hashlib.sha256).hexdigest()
        given = posted.headers.get("x-signature", "").split(",")
        if not any(hmac.compare_digest(expected, value.strip()) for value in given):
            raise Refused(403, "forbidden", "bad signature", reason="bad_signature")
        if posted.headers.get("x-event") == "ping":
            return Handshake({"received": 0, "incidents": [], "pong": True})
        return None


class SignedSource(AlarmSource):
    """`POST /alerts/signed`: the generic format, signed (no bearer token)."""

    name = "generic"
    path = "/alerts/signed"
    payload = generic.GenericAlert
    alert_by_alert = False
    bearer_token = False

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def verification(self, settings: Settings, *, fetch: Fetch) -> Verify:
        return SignatureCheck(self.secret)

    def parse(self, payload: BaseModel) -> Delivery:
        return generic.source.parse(payload)


def signed(secret: bytes, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    signature = "v1=" + hmac.new(secret, raw, hashlib.sha256).hexdigest()
    return {
        "content": raw,
        "headers": {"Content-Type": "application/json", "X-Signature": signature, **headers},
    }


async def test_a_source_with_its_own_verification_needs_no_route_of_its_own(
    api: client.ApiClient, namespace: str
) -> None:
    secret = secrets.token_bytes(32)
    settings = Settings(
        incident_namespace=namespace,
        ingest_tokens=secrets.token_urlsafe(24),
        ingest_docs_enabled=True,
    )
    app = create_app(
        settings=settings,
        recorder=AlarmRecorder(api=api, namespace=namespace),
        api=api,
        registry=CollectorRegistry(),
        sources=(*SOURCES, SignedSource(secret)),
    )
    # No bearer token anywhere: the signature is the source's proof.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://webhook"
    ) as http:
        taken = await http.post("/alerts/signed", **signed(secret, generic_alert("signed")))
        forged = await http.post(
            "/alerts/signed", **signed(b"not the secret", generic_alert("forged"))
        )
        ping = await http.post(
            "/alerts/signed", **signed(secret, generic_alert("ping"), **{"X-Event": "ping"})
        )
        plain = await http.post(
            "/alerts/signed",
            content=json.dumps(generic_alert("plain")),
            headers={"Content-Type": "text/plain"},
        )
        # The other sources still want the token.
        unauthenticated = await http.post("/alert", json=generic_alert("no-token"))
        spec = (await http.get("/openapi.json")).json()
        metrics = (await http.get("/metrics")).text

    assert taken.status_code == 200, taken.text
    assert taken.json()["incidents"][0]["result"] == "created"
    assert forged.status_code == 403 and forged.json()["error"] == "forbidden"
    assert ping.status_code == 200 and ping.json() == {"received": 0, "incidents": [], "pong": True}
    assert plain.status_code == 415  # the request gate knows the source's content types
    assert unauthenticated.status_code == 401
    assert metric(metrics, "incident_ingest_rejected_total", reason="bad_signature") == 1
    assert [i["spec"]["service"]["name"] for i in incidents(api, namespace)] == ["signed"]
    operation = spec["paths"]["/alerts/signed"]["post"]
    assert "security" not in operation
    assert (
        operation["summary"]
        == "`POST /alerts/signed`: the generic format, signed (no bearer token)."
    )
