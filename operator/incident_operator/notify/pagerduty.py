"""PagerDuty (Events API v2): page when the Incident escalates, mirror its acknowledgement
and its resolution.

Three events per Incident at most, all with the same `dedup_key` (the
Incident's `namespace/name@uid`: PagerDuty's alert key, and how its
webhook's acknowledgement finds the Incident again, see
ingest/pagerduty_webhook.py):

- `trigger` when the Incident enters a phase of the policy's
  `notify.pagerduty.triggerOn` (Escalated by default; a plain notify_team
  only with `onNotifyTeam`), with the severity mapped, the assessment in
  `custom_details` and a link (INCIDENT_LINK_TEMPLATE);
- `acknowledge` once someone acknowledged it elsewhere (Slack, kubectl, an
  approval); an acknowledgement that came from PagerDuty is not sent back;
- `resolve` when the Incident is Resolved.

`status.notifications.pagerduty` holds the dedup_key, the routing key's
name (acknowledge and resolve go where the trigger went) and which events
PagerDuty took; it is there from the moment a trigger is decided, so a
resolution that comes before a queued trigger was taken sends both, in
order. Once each, across crashes: an accepted event is recorded
(delivered.py) before the status says so, and looked for before sending. A trigger sent
twice (killed between PagerDuty's 202 and the record) is folded by
PagerDuty into the same alert by its dedup_key: one PagerDuty incident.

PagerDuty takes about 120 events a minute per routing key and answers 429
past that. Events go through one paced lane per routing key
(PAGERDUTY_EVENTS_PER_MINUTE, outbox.py), and 429s, 5xx and lost answers
are retried with backoff, never dropped; a 400 (an invalid event) is a
failure for a human. During a burst `tell` returns before its event is
sent (`queued`): the transition is told again, and finds it delivered.

Routing keys are secrets: PAGERDUTY_ROUTING_KEY, and named ones in
PAGERDUTY_ROUTING_KEYS (`name=key,...`) for policies that page another
service (`notify.pagerduty.routingKey: <name>`). Logs and conditions name
a key by its name, never its value.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..crashpoints import crash_point
from ..escalation import latest_step
from ..models import CLOSED_PHASES, EscalationStepTaken, Incident, Severity
from ..policy import Policy
from .channel import ChannelFailed, Told
from .delivered import Delivered, DeliveryKey, record_taken
from .outbox import Outbox, Poster, Refused, wait_for
from .story import facts, incident_link, kubectl_command

log = logging.getLogger(__name__)

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
MAX_DEDUP_KEY = 255
DEFAULT_KEY_NAME = "default"

Action = Literal["trigger", "acknowledge", "resolve"]

# PagerDuty knows four severities.
SEVERITIES: Mapping[Severity, str] = {
    "critical": "critical",
    "high": "error",
    "medium": "warning",
    "low": "info",
    "info": "info",
}


def dedup_key(incident: Incident) -> str:
    """`namespace/name@uid`, PagerDuty's alert key (at most 255 characters)."""
    identity = incident.identity
    if len(identity) <= MAX_DEDUP_KEY:
        return identity
    # Kubernetes names are short enough in practice; if not, the uid alone
    # is unique (the webhook cannot find such an Incident by its key).
    return str(incident.metadata.get("uid", ""))[:MAX_DEDUP_KEY]


def parse_dedup_key(key: str) -> tuple[str, str, str] | None:
    """(namespace, name, uid) from a dedup_key made by `dedup_key`; None for any other."""
    reference, at, uid = key.rpartition("@")
    namespace, slash, name = reference.partition("/")
    if not (at and slash and namespace and name and uid) or "/" in name:
        return None
    return namespace, name, uid


@dataclass(frozen=True)
class Event:
    body: dict[str, Any]
    delivery: DeliveryKey
    key_name: str


class PagerDutyChannel:
    name = "pagerduty"

    def __init__(
        self,
        *,
        routing_keys: Mapping[str, str],
        delivered: Delivered,
        events_url: str = EVENTS_URL,
        per_minute: float = 100.0,
        wait: float = 5.0,
        backoff: float = 1.0,
        link_template: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._keys = dict(routing_keys)
        self._delivered = delivered
        self._url = events_url
        self._wait = wait
        self._link_template = link_template
        self._poster = Poster(timeout=timeout)
        self.outbox: Outbox[Event] = Outbox(send=self._send, per_minute=per_minute, backoff=backoff)

    # --- what is due ----------------------------------------------------------

    def wants(self, incident: Incident, *, policy: Policy) -> bool:
        return bool(self._due(incident, policy)) or bool(_step_pages(incident))

    def _due(self, incident: Incident, policy: Policy) -> list[Action]:
        status = incident.status
        phase = status.phase or "Triggered"
        ref = status.notifications.pagerduty if status.notifications else None
        due: list[Action] = []
        if ref is None:
            if not _pages(incident, policy):
                return []
            due.append("trigger")
        elif not ref.triggered:
            due.append("trigger")  # decided, still to be confirmed (queued, or lost in a crash)
        ack = status.acknowledgement
        acked = ref is not None and ref.acknowledged
        if ack is not None and ack.via != "pagerduty" and not acked and phase not in CLOSED_PHASES:
            due.append("acknowledge")
        if phase == "Resolved" and not (ref is not None and ref.resolved):
            due.append("resolve")
        return due

    # --- telling ----------------------------------------------------------------

    async def tell(self, incident: Incident, *, policy: Policy) -> Told:
        ref = incident.status.notifications.pagerduty if incident.status.notifications else None
        # Acknowledge and resolve go where the trigger went, whatever the policy says now.
        key_name = ref.routing_key if ref and ref.routing_key else _key_name(policy)
        routing_key = self._key(key_name)
        dedup = ref.dedup_key if ref else dedup_key(incident)
        # From here on the status says a trigger was decided: a resolution
        # that comes before PagerDuty took it still sends trigger, then resolve.
        state: dict[str, Any] = {"dedupKey": dedup, "routingKey": key_name, "triggered": False}
        state.update(ref.to_api() if ref else {})
        lane = _lane(routing_key)
        ahead = self.outbox.depth(lane)
        # Every due event into its lane at once, in order; then wait for them.
        uid = incident.metadata.get("uid")
        planned: list[tuple[Action, str, str, str, str]] = [
            (action, key_name, routing_key, dedup, f"{action}@{uid}")
            for action in self._due(incident, policy)
        ]
        main = len(planned)
        for action, step in _step_pages(incident):
            # An escalation step's page: an alert of its own on the step's
            # routing key, resolved with the Incident.
            assert step.pagerduty is not None
            alert_key, tag = f"{dedup}#step{step.number}", f"{action}-step{step.number}@{uid}"
            planned.append((action, step.pagerduty, self._key(step.pagerduty), alert_key, tag))
        # The status says a trigger was decided only when one was, not for a step's page alone.
        recorded = {"pagerduty": state} if ref is not None or main else {}
        submitted: list[tuple[Action, str, str, bool, asyncio.Future[None] | None]] = []
        for action, name, key, alert_key, tag in planned:
            event = Event(
                body=self._body(incident, action, routing_key=key, dedup=alert_key),
                delivery=DeliveryKey("pagerduty", incident.reference, tag),
                key_name=name,
            )
            found = await self._delivered.was(event.delivery)
            sent = None if found else self.outbox.submit(_lane(key), f"{alert_key}#{action}", event)
            submitted.append((action, name, tag, found, sent))
        deadline = asyncio.get_running_loop().time() + self._wait
        notes: list[str] = []
        for action, name, tag, found, sent in submitted:
            if sent is not None:
                left = deadline - asyncio.get_running_loop().time()
                if not await wait_for(sent, seconds=max(left, 0.0)):
                    notes.append(
                        f"{action} queued for routing key {name!r} ({ahead} event(s) were "
                        "ahead, paced under PagerDuty's limit); told again once sent"
                    )
                    return Told(recorded, "; ".join(notes), queued=True)
                try:
                    sent.result()
                except Refused as refused:
                    raise ChannelFailed(f"PagerDuty refused the {action}: {refused}",
                                        retryable=False) from refused  # fmt: skip
            if "-step" in tag:
                notes.append(f"escalation {action} {'sent before' if found else 'sent'} ({name})")
                continue
            state[_SENT[action]] = True
            notes.append(f"{action} {'sent before' if found else 'sent'} ({name})")
        return Told(recorded, "; ".join(notes))

    def _key(self, name: str) -> str:
        key = self._keys.get(name)
        if key is None:
            known = ", ".join(sorted(self._keys)) or "none"
            raise ChannelFailed(
                f"no PagerDuty routing key named {name!r} (known: {known}); set "
                "PAGERDUTY_ROUTING_KEY or PAGERDUTY_ROUTING_KEYS",
                retryable=False,
            )
        return key

    def _body(
        self, incident: Incident, action: Action, *, routing_key: str, dedup: str
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "routing_key": routing_key,
            "event_action": action,
            "dedup_key": dedup,
        }
        if action != "trigger":
            return body
        spec, status = incident.spec, incident.status
        details: dict[str, Any] = dict(facts(incident))
        details["Incident"] = incident.reference
        details["See it"] = kubectl_command(incident)
        if status.assessment is not None:
            details["assessment"] = status.assessment.to_api()
        body["payload"] = {
            "summary": f"[{spec.severity}] {spec.title}"[:1024],
            "source": (spec.service.cluster + "/" if spec.service.cluster else "")
            + spec.service.name,
            "severity": SEVERITIES[spec.severity],
            "component": spec.service.name,
            "class": spec.alarm.name,
            "custom_details": details,
        }
        if spec.service.cluster:
            body["payload"]["group"] = spec.service.cluster
        if status.first_seen is not None:
            body["payload"]["timestamp"] = status.first_seen.isoformat()
        body["client"] = "incident-operator"
        link = incident_link(incident, self._link_template)
        if link:
            body["client_url"] = link
            body["links"] = [{"href": link, "text": f"Incident {incident.reference}"}]
        return body

    # --- sending (in the lane) ----------------------------------------------------

    async def _send(self, lane: str, event: Event) -> None:
        action = event.body["event_action"]
        await self._poster.post(
            self._url,
            body=json.dumps(event.body).encode(),
            headers={"Content-Type": "application/json"},
            what=f"the {action} (routing key {event.key_name!r})",
        )
        crash_point("after-page")
        await record_taken(self._delivered, event.delivery)
        log.info(
            "PagerDuty event sent",
            extra={"incident": event.delivery.incident_id, "action": action,
                   "routing_key": event.key_name},
        )  # fmt: skip

    async def close(self) -> None:
        await self.outbox.close()
        await self._poster.close()


def _step_pages(incident: Incident) -> list[tuple[Action, EscalationStepTaken]]:
    """Escalation steps' pages due: the latest step's trigger, and on
    resolution the resolve of every step that paged."""
    phase = incident.status.phase or "Triggered"
    due: list[tuple[Action, EscalationStepTaken]] = []
    latest = latest_step(incident)
    if latest is not None and latest.pagerduty and phase not in CLOSED_PHASES:
        due.append(("trigger", latest))
    escalation = incident.status.escalation
    if phase == "Resolved" and escalation is not None:
        due += [("resolve", step) for step in escalation.steps if step.pagerduty]
    return due


def _pages(incident: Incident, policy: Policy) -> bool:
    """Whether this phase pages under the policy."""
    target = policy.spec.notify.pagerduty
    phases = target.trigger_on if target else ["Escalated"]
    if (incident.status.phase or "Triggered") not in phases:
        return False
    assessment = incident.status.assessment
    plain_notify = (
        assessment is not None
        and assessment.decision == "SAFE"
        and assessment.action == "notify_team"
    )
    return not plain_notify or bool(target and target.on_notify_team)


# The status.notifications.pagerduty field that says an event was taken.
_SENT: Mapping[Action, str] = {
    "trigger": "triggered",
    "acknowledge": "acknowledged",
    "resolve": "resolved",
}


def _key_name(policy: Policy) -> str:
    target = policy.spec.notify.pagerduty
    return (target.routing_key if target else None) or DEFAULT_KEY_NAME


def _lane(routing_key: str) -> str:
    # Lanes are named by a digest: a routing key is a secret, and lane
    # names reach logs.
    return hashlib.sha256(routing_key.encode()).hexdigest()[:16]
