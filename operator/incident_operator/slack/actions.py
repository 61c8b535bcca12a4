"""`POST /slack/actions`: Slack's buttons (Approve, Reject, Acknowledge, Silence 1h,
View Timeline).

Order matters. The signature is checked on the raw bytes before anything is
parsed (slack_sdk's SignatureVerifier: HMAC-SHA256 with SLACK_SIGNING_SECRET,
timestamps within 5 minutes), and every request that fails it gets a 401
and changes nothing. Then the click is judged against the Incident as the
API server has it *now*: it must be AwaitingApproval with a Pending
approval, the clicker must be one of `status.approval.approvers` or in
`status.approval.approverGroup` (no list: anyone), and the message must be
the Incident's own. A decision is written to `status.approval` through the
status subresource with the resourceVersion it was judged on, so a click
racing another click or the operator cannot overwrite what they did; the
loser is judged again on the fresh object and told why nothing happened.

Slack wants an answer within 3 seconds: the HTTP answer is an empty 200 as
soon as the decision is written, and what the clicker reads (a confirmation,
a polite refusal, the timeline) goes to the payload's `response_url` as an
ephemeral message, after the answer. That URL is only ever one of Slack's:
https on hooks.slack.com (or GovSlack's hooks.slack-gov.com), or on the
origin of SLACK_API_URL when it is set (a proxy, the tests' fake Slack). A
click naming any other is refused (400), changes nothing and is fetched by
no one: a signed payload must not make the webhook call into its own network.

The webhook reads no ResponsePolicy (its RBAC is get/patch on incidents):
the approvers were copied into the approval when it was requested.

"Silence 1h" creates a Silence (the webhook's one other right: `create` on
silences) matching the Incident's service and alarm name for an hour, by
the same approvers (those of the Incident's approval; anyone when it has
none, as for approvals with no list). It mutes the next alarms that match;
the Incident clicked on goes on as it is.

"View Timeline" shows the DynamoDB timeline when TIMELINE_TABLE is set for
the webhook (and it may read it), else what the Incident's status tells:
its conditions, remediation and latest transition.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import urllib3
from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse, Response
from kubernetes import client
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from ..acknowledgement import acknowledge
from ..config import Settings
from ..ingest.jsonbody import JsonRefused, loads
from ..kube import patch_status_if_unchanged, read_incident
from ..models import API_VERSION, GROUP, MAX_NAME, TERMINAL_PHASES, VERSION, Incident
from ..notify.channel import ChannelFailed
from ..timeline import Timeline
from ..timeline.dynamodb import DynamoTimeline
from .api import reply_ephemeral, slack_client, user_in_group
from .blocks import (
    ACKNOWLEDGE,
    APPROVE,
    REJECT,
    SILENCE,
    TIMELINE,
    approval_text,
    escape,
    timeline_from_entries,
    timeline_from_status,
    who_said,
)

log = logging.getLogger(__name__)

PATH = "/slack/actions"
FORM = "application/x-www-form-urlencoded"
# A Kubernetes namespace and name (DNS-1123), as the buttons carry them.
REFERENCE = re.compile(r"^([a-z0-9][a-z0-9-]{0,62})/([a-z0-9][a-z0-9.-]{0,252})$")
WRITE_ATTEMPTS = 3
SILENCE_FOR = timedelta(hours=1)
TIMELINE_READ_SECONDS = 2.0
# Where Slack's response URLs point: its hooks host, and GovSlack's (GovSlack
# runs on the slack-gov.com domain instead of slack.com).
SLACK_RESPONSE_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")

Origin = tuple[str, str, int]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SlackUser(_Payload):
    id: str = Field(min_length=1, max_length=64)


class SlackAction(_Payload):
    action_id: str
    value: str = ""


class SlackContainer(_Payload):
    message_ts: str | None = None


class BlockActions(_Payload):
    """The part of a `block_actions` payload we use."""

    type: Literal["block_actions"]
    user: SlackUser
    actions: list[SlackAction] = Field(min_length=1)
    response_url: str | None = None
    container: SlackContainer = Field(default_factory=SlackContainer)


@dataclass(frozen=True)
class Verdict:
    """What a click comes to: a decision to write, or only something to say."""

    say: str
    state: Literal["Approved", "Rejected"] | None = None


def slack_actions_router(
    *,
    settings: Settings,
    api: client.ApiClient,
    clock: Clock | None = None,
    timeline: Timeline | None = None,
) -> APIRouter:
    secret = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    )
    verifier = SignatureVerifier(secret, clock=clock or Clock()) if secret.strip() else None
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    slack = slack_client(token=token, base_url=settings.slack_api_url) if token else None
    if timeline is None and settings.timeline_table:
        timeline = DynamoTimeline(settings.timeline_table, region=settings.aws_region)
    objects = client.CustomObjectsApi(api)
    reply_origins = response_url_origins(settings.slack_api_url)
    router = APIRouter()

    @router.post(
        PATH,
        tags=["slack"],
        summary="Slack interactivity: the Approve, Reject, Acknowledge, Silence 1h and "
        "View Timeline buttons",
        description="Signed by Slack (X-Slack-Signature); no bearer token.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {FORM: {"schema": {"type": "object", "properties": {
                    "payload": {"type": "string", "description": "block_actions JSON"}}}}},
            }
        },
    )  # fmt: skip
    async def slack_actions(request: Request, background: BackgroundTasks) -> Response:
        raw = await request.body()
        if verifier is None:
            return _error(401, "unauthorized", "SLACK_SIGNING_SECRET is not set: cannot verify")
        if not _verified(verifier, raw, dict(request.headers)):
            log.warning("refused a Slack request with a bad or stale signature")
            return _error(401, "unauthorized", "invalid or expired Slack signature")
        try:
            payload = _parse(raw)
        except JsonRefused as refused:
            return _error(400, refused.code, str(refused))
        except ValueError as problem:
            return _error(400, "invalid_payload", str(problem))
        if payload is None:
            return Response(status_code=200)  # another kind of interaction: not ours
        if payload.response_url is not None and not response_url_allowed(
            payload.response_url, reply_origins
        ):
            log.warning(
                "refused a Slack click whose response_url is not Slack's",
                extra={"response_url": payload.response_url[:200]},
            )
            return _error(
                400,
                "invalid_payload",
                "response_url is not an https URL on Slack's hosts; nothing changed",
            )
        action = payload.actions[0]
        reply = _Replier(payload.response_url)
        match = REFERENCE.match(action.value)
        if action.action_id not in (APPROVE, REJECT, TIMELINE, ACKNOWLEDGE, SILENCE) or (
            match is None
        ):
            background.add_task(reply, "Sorry, I do not know what this button is for.")
            return Response(status_code=200)
        namespace, name = match.groups()
        try:
            incident = await _read(objects, namespace, name)
            if incident is None:
                background.add_task(reply, f"Incident {namespace}/{name} no longer exists.")
            elif action.action_id == TIMELINE:
                background.add_task(_show_timeline, reply, incident, timeline)
            elif action.action_id == ACKNOWLEDGE:
                said = await _acknowledge(objects, incident, payload.user.id)
                background.add_task(reply, said)
            elif action.action_id == SILENCE:
                said = await _silence(objects, slack, incident, payload.user.id)
                background.add_task(reply, said)
            else:
                said = await _decide(objects, slack, incident, payload, action.action_id)
                background.add_task(reply, said)
        except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            # Slack shows its own error for anything but a 200 and does not
            # retry clicks: the clicker is told here instead.
            failure = (
                f"HTTP {error.status}"
                if isinstance(error, client.ApiException)
                else type(error).__name__
            )
            log.warning(
                "Slack click not handled: the Kubernetes API failed",
                extra={"incident": name, "error": f"{failure}: {error}"[:300]},
            )
            background.add_task(
                reply,
                f"Sorry, I could not reach Kubernetes ({failure}); nothing changed. "
                "Please try again.",
            )
        return Response(status_code=200)

    return router


def _verified(verifier: SignatureVerifier, raw: bytes, headers: dict[str, str]) -> bool:
    try:
        return verifier.is_valid_request(raw, headers)
    except (ValueError, UnicodeDecodeError):
        return False  # a timestamp that is no number, a body that is no text


def _parse(raw: bytes) -> BlockActions | None:
    form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
    if "payload" not in form:
        raise ValueError("the form has no payload field")
    document = loads(form["payload"][0], what="the payload field")
    if not isinstance(document, dict) or document.get("type") != "block_actions":
        return None
    try:
        return BlockActions.model_validate(document)
    except ValidationError as error:
        raise ValueError(f"not a block_actions payload we understand: {error}") from error


def response_url_origins(slack_api_url: str | None) -> frozenset[Origin]:
    """The origins a response_url may have: Slack's, and SLACK_API_URL's if set."""
    origins = {("https", host, 443) for host in SLACK_RESPONSE_HOSTS}
    if slack_api_url:
        override = _origin(slack_api_url)
        if override is not None:
            origins.add(override)
    return frozenset(origins)


def response_url_allowed(url: str, origins: frozenset[Origin]) -> bool:
    """Whether the webhook may POST a reply to `url`: it is on one of `origins`."""
    return _origin(url) in origins


def _origin(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL without credentials; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    return (parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


async def _read(objects: client.CustomObjectsApi, namespace: str, name: str) -> Incident | None:
    body = await asyncio.to_thread(read_incident, objects, namespace, name)
    return Incident.model_validate(body) if body is not None else None


async def _acknowledge(objects: client.CustomObjectsApi, incident: Incident, user: str) -> str:
    """Record that `user` took the Incident (anyone may: it commits them, not
    the operator); what to tell them."""
    ref = incident.reference
    namespace, name = incident.metadata["namespace"], incident.metadata["name"]
    acked = await acknowledge(objects, namespace, name, by=user, via="slack", incident=incident)
    now = acked.incident
    if acked.result == "acknowledged":
        log.info("acknowledged in Slack", extra={"incident": name, "by": user})
        return f"You acknowledged {ref}: it is yours. The operator records it."
    if acked.result == "already_acknowledged" and now and now.status.acknowledgement:
        earlier = now.status.acknowledgement
        who = who_said(earlier.by, earlier.via) or "someone"
        return f"Thanks, but {who} already acknowledged {ref}."
    if acked.result == "ended" and now is not None:
        return f"Incident {ref} has ended ({now.status.phase}); there is nothing to acknowledge."
    if acked.result == "unknown_incident":
        return f"Incident {ref} no longer exists."
    return f"Incident {ref} kept changing; nothing was recorded. Please try again."


async def _silence(
    objects: client.CustomObjectsApi,
    slack: AsyncWebClient | None,
    incident: Incident,
    user: str,
) -> str:
    """Create a Silence of the Incident's service and alarm for an hour, if
    `user` is one of its approvers; what to tell them."""
    approval = incident.status.approval
    approvers = approval.approvers if approval else []
    refusal = await _may_decide(
        slack, approvers, approval.approver_group if approval else None, user
    )
    if refusal:
        return refusal.replace("approvers for this incident", "approvers who may silence it")
    spec = incident.spec
    if len(spec.service.name) > MAX_NAME or len(spec.alarm.name) > MAX_NAME:
        return "Sorry, this service or alarm name is too long to silence from Slack; use kubectl."
    now = datetime.now(UTC).replace(microsecond=0)
    until = now + SILENCE_FOR
    body = {
        "apiVersion": API_VERSION,
        "kind": "Silence",
        "metadata": {
            # Unique per click: a second click makes a second, harmless silence.
            "generateName": f"{incident.metadata['name'][:40].rstrip('-.')}-",
            "annotations": {f"{GROUP}/incident": incident.reference},
        },
        "spec": {
            "matchers": [
                {"name": "service", "op": "=", "value": spec.service.name},
                {"name": "alarm", "op": "=", "value": spec.alarm.name},
            ],
            "startsAt": now.isoformat(),
            "endsAt": until.isoformat(),
            "createdBy": f"slack:{user}",
            "comment": f"Silence 1h from Slack, on {incident.reference}",
        },
    }
    created = await asyncio.to_thread(
        objects.create_namespaced_custom_object,
        GROUP, VERSION, incident.metadata["namespace"], "silences", body,
    )  # fmt: skip
    silence = created["metadata"]["name"]
    log.info(
        "silence created in Slack",
        extra={"incident": incident.metadata["name"], "silence": silence, "by": user},
    )
    return (
        f"You silenced {escape(spec.alarm.name)} of {escape(spec.service.name)} until "
        f"{until:%H:%M} UTC (silence {silence}): new alarms that match are recorded but "
        f"not announced. {incident.reference} goes on as it is."
    )


async def _decide(
    objects: client.CustomObjectsApi,
    slack: AsyncWebClient | None,
    incident: Incident,
    payload: BlockActions,
    action_id: str,
) -> str:
    """Judge the click and write the decision; what to tell the clicker."""
    wanted: Literal["Approved", "Rejected"] = "Approved" if action_id == APPROVE else "Rejected"
    user = payload.user.id
    for _ in range(WRITE_ATTEMPTS):
        verdict = await _judge(slack, incident, user, payload.container.message_ts, wanted)
        if verdict.state is None:
            return verdict.say
        written = await _write(objects, incident, state=verdict.state, user=user)
        if written:
            log.info(
                "approval decided in Slack",
                extra={"incident": incident.metadata["name"], "state": verdict.state, "by": user},
            )
            return verdict.say
        # Changed since we read it (another click, the operator): judge again.
        fresh = await _read(objects, incident.metadata["namespace"], incident.metadata["name"])
        if fresh is None:
            return f"Incident {incident.reference} no longer exists."
        incident = fresh
    return f"Incident {incident.reference} kept changing; nothing was decided. Please try again."


async def _judge(
    slack: AsyncWebClient | None,
    incident: Incident,
    user: str,
    message_ts: str | None,
    wanted: Literal["Approved", "Rejected"],
) -> Verdict:
    status = incident.status
    approval = status.approval
    ref = incident.reference
    phase = status.phase or "Triggered"
    if approval is not None and approval.state in ("Approved", "Rejected"):
        who = who_said(approval.by, approval.via) or "someone"
        return Verdict(f"Thanks, but {ref} was already {approval.state.lower()} by {who}.")
    if phase in TERMINAL_PHASES:
        return Verdict(f"Incident {ref} has ended ({phase}); there is nothing to decide.")
    if phase != "AwaitingApproval" or approval is None or approval.state != "Pending":
        state = approval.state.lower() if approval else "not requested"
        return Verdict(f"Incident {ref} is {phase} (approval {state}); it is not waiting for you.")
    notified = status.notifications.slack if status.notifications else None
    if notified is not None and message_ts and notified.ts != message_ts:
        return Verdict(f"This message is out of date; use the newest message for {ref}.")
    refusal = await _may_decide(slack, approval.approvers, approval.approver_group, user)
    if refusal:
        return Verdict(refusal)
    decided = "approved" if wanted == "Approved" else "rejected"
    what = approval_text(approval)
    return Verdict(f"You {decided} {what} for {ref}. The operator takes it from here.", wanted)


async def _may_decide(
    slack: AsyncWebClient | None, approvers: list[str], group: str | None, user: str
) -> str | None:
    """None if `user` may decide; else why not, politely."""
    if (not approvers and not group) or user in approvers:
        return None
    if group:
        if slack is None:
            return "Sorry, I cannot check the approver group (no SLACK_BOT_TOKEN); nothing changed."
        try:
            if await user_in_group(slack, group=group, user=user):
                return None
        except ChannelFailed as failure:
            return f"Sorry, I could not check the approver group ({failure}); nothing changed."
    return "Sorry, you are not one of the approvers for this incident; nothing changed."


async def _write(
    objects: client.CustomObjectsApi,
    incident: Incident,
    *,
    state: Literal["Approved", "Rejected"],
    user: str,
) -> bool:
    """Write the decision if the Incident is as judged; False if it changed meanwhile."""
    approval = {"state": state, "by": user, "via": "slack", "at": datetime.now(UTC).isoformat()}
    written = await asyncio.to_thread(
        patch_status_if_unchanged,
        objects,
        incident.metadata["namespace"],
        incident.metadata["name"],
        incident.metadata["resourceVersion"],
        {"approval": approval},
    )
    return written is not None


async def _show_timeline(reply: _Replier, incident: Incident, timeline: Timeline | None) -> None:
    text = timeline_from_status(incident)
    if timeline is not None:
        try:
            entries = await asyncio.wait_for(
                timeline.read(incident.reference), timeout=TIMELINE_READ_SECONDS
            )
            if entries:
                text = timeline_from_entries(incident, entries)
        except (ClientError, BotoCoreError, TimeoutError) as error:
            log.warning(
                "timeline unreadable; showing the status instead",
                extra={"incident": incident.metadata["name"], "error": str(error)},
            )
            text += f"\n_(the timeline table could not be read: {type(error).__name__})_"
    await reply(text)


class _Replier:
    """Ephemeral messages to the clicker, through the payload's response_url."""

    def __init__(self, url: str | None) -> None:
        self._url = url

    async def __call__(self, text: str) -> None:
        if not self._url:
            log.info("no response_url to answer a Slack click", extra={"said": text})
            return
        problem = await reply_ephemeral(self._url, text)
        if problem is not None:
            log.warning("could not answer a Slack click", extra={"error": problem})


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)
