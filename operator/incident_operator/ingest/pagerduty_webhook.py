"""`POST /pagerduty/webhook`: PagerDuty's webhooks (v3) acknowledge Incidents.

A person acknowledging the page in PagerDuty acknowledges the Incident:
`incident.acknowledged` becomes `status.acknowledgement` with `via:
pagerduty` and `by` the PagerDuty user (the event's agent). The operator
records it as it records any acknowledgement (the Acknowledged condition,
an Event, the timeline, MTTA) and does not send it back to PagerDuty.

Verification first, on the raw bytes: `X-PagerDuty-Signature` holds one or
more `v1=<hex HMAC-SHA256 of the body>` (several while a secret is
rotated), and one must match one of PAGERDUTY_WEBHOOK_SECRETS, compared in
constant time. A request without a valid one gets 401 and changes nothing;
so does every request while no secret is configured.

The PagerDuty incident is mapped back to ours through its `incident_key`,
the `dedup_key` the operator's trigger gave it (`namespace/name@uid`, see
notify/pagerduty.py); the uid must match, so a newer Incident that took
the name of a deleted one is never acknowledged by the old page. Anything
else (another event type, an incident we did not page, one already
acknowledged or ended) is answered 200 with what happened: PagerDuty
drops a delivery answered with a 4xx, and disables a subscription that
keeps getting them. A Kubernetes API failure is a 503, which it retries.

The webhook's RBAC stays get and patch of incidents/status, as for Slack.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import UTC, datetime
from typing import Any, Literal

import urllib3
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from kubernetes import client
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..acknowledgement import acknowledge
from ..config import Settings
from ..notify.pagerduty import parse_dedup_key
from .jsonbody import JsonRefused, loads

log = logging.getLogger(__name__)

PATH = "/pagerduty/webhook"
SIGNATURE_HEADER = "X-PagerDuty-Signature"
ACKNOWLEDGED = "incident.acknowledged"

Result = Literal["acknowledged", "already_acknowledged", "ended", "unknown_incident", "ignored"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Agent(_Lenient):
    id: str | None = None
    summary: str | None = None


class IncidentData(_Lenient):
    id: str | None = None
    incident_key: str | None = None


class WebhookEvent(_Lenient):
    id: str | None = None
    event_type: str
    occurred_at: datetime | None = None
    agent: Agent | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class WebhookPayload(_Lenient):
    event: WebhookEvent


def signature_valid(secrets: list[str], body: bytes, header: str | None) -> bool:
    """Whether one of the header's `v1=` signatures is the body's HMAC under one secret."""
    if not header or not secrets:
        return False
    offered = [
        part.strip()[3:].lower() for part in header.split(",") if part.strip().startswith("v1=")
    ]
    valid = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        for signature in offered:
            # Every comparison made, in constant time: no early exit to time.
            valid |= hmac.compare_digest(expected, signature)
    return valid


def pagerduty_webhook_router(*, settings: Settings, api: client.ApiClient) -> APIRouter:
    raw = settings.pagerduty_webhook_secrets.get_secret_value()
    secrets = [secret.strip() for secret in raw.split(",") if secret.strip()]
    objects = client.CustomObjectsApi(api)
    router = APIRouter()

    @router.post(
        PATH,
        tags=["pagerduty"],
        summary="PagerDuty webhook (v3): incident.acknowledged acknowledges the Incident",
        description="Signed by PagerDuty (X-PagerDuty-Signature); no bearer token.",
        response_model=None,
    )
    async def pagerduty_webhook(request: Request) -> JSONResponse:
        body = await request.body()
        if not secrets:
            return _error(
                401, "unauthorized", "PAGERDUTY_WEBHOOK_SECRETS is not set: cannot verify"
            )
        if not signature_valid(secrets, body, request.headers.get(SIGNATURE_HEADER)):
            log.warning("refused a PagerDuty webhook with a missing or bad signature")
            return _error(401, "unauthorized", "missing or invalid X-PagerDuty-Signature")
        try:
            payload = WebhookPayload.model_validate(loads(body))
        except JsonRefused as refused:
            return _error(400, refused.code, str(refused))
        except ValidationError as error:
            return _error(422, "invalid_payload", f"not a PagerDuty v3 webhook event: {error}")
        event = payload.event
        if event.event_type != ACKNOWLEDGED:
            return _answer("ignored", event)
        data = IncidentData.model_validate(event.data)
        found = parse_dedup_key(data.incident_key or "")
        if found is None:
            return _answer("unknown_incident", event)
        namespace, name, uid = found
        agent = event.agent
        by = ((agent.summary or agent.id) if agent else None) or "pagerduty"
        at = event.occurred_at or datetime.now(UTC)
        try:
            acked = await acknowledge(
                objects, namespace, name, uid=uid, by=by[:256], at=at, via="pagerduty"
            )
            if acked.result == "conflict":
                raise client.ApiException(status=409, reason="the Incident kept changing")
            result: Result = acked.result
        except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            log.warning(
                "PagerDuty acknowledgement not recorded: the Kubernetes API failed",
                extra={"incident": name, "error": str(error)[:300]},
            )
            response = _error(503, "unavailable", "the Kubernetes API is unavailable; retry")
            response.headers["Retry-After"] = "5"
            return response
        if result == "acknowledged":
            log.info("acknowledged in PagerDuty", extra={"incident": name, "by": by})
        return _answer(result, event, incident=f"{namespace}/{name}")

    return router


def _answer(result: Result, event: WebhookEvent, *, incident: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"result": result, "event": event.id, "eventType": event.event_type, "incident": incident}
    )


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)
