"""Outbound webhooks: every transition of an Incident POSTed as a signed CloudEvent.

Each target of OUTBOUND_WEBHOOKS (a URL and its secret, from a Secret)
receives one CloudEvents 1.0 event per transition that recorded something,
in structured mode (`Content-Type: application/cloudevents+json`):

    {"specversion": "1.0", "id": "<64 hex>", "type": "dev.incident-response.incident.escalated",
     "source": "/apis/incident-response.dev/v1alpha1/namespaces/shop/incidents/checkout-3f1c",
     "subject": "shop/checkout-3f1c", "time": "...", "datacontenttype": "application/json",
     "data": {"incident": ..., "uid": ..., "phase": ..., "records": [...], ...}}

The `id` is a digest of the Incident's uid and the transition (its phase
and records), the same however often it is sent: a receiver dedupes on it.
The type is the phase the Incident is in after the transition.

Signed as `X-Incident-Operator-Signature: t=<unix seconds>,v1=<hex>`, the
hex being HMAC-SHA256 with the target's secret over `<t>.<raw body>`; a
receiver recomputes it, compares in constant time and refuses a `t` too
far from its clock (the README has the code). Each attempt is signed anew.

Sent through one lane per target (outbox.py): in order, 429, 408, 5xx and
lost answers retried with backoff, never dropped; another 4xx is the
receiver refusing the event (a failure in the Notified condition). Once per
transition across crashes: each accepted event is recorded (delivered.py)
and looked for before sending; the id covers the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..crashpoints import crash_point
from ..models import GROUP, VERSION, Incident
from ..policy import Policy
from .channel import ChannelFailed, Told
from .delivered import Delivered, DeliveryKey, record_taken
from .outbox import Outbox, Poster, Refused, wait_for
from .story import incident_link

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Incident-Operator-Signature"
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
TYPE_PREFIX = "dev.incident-response.incident."


@dataclass(frozen=True)
class Target:
    url: str
    secret: str

    @property
    def digest(self) -> str:
        # Names the target in records and lanes without its secret or query.
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Delivery:
    target: Target
    body: bytes
    event_id: str
    record: DeliveryKey


def event_id(incident: Incident) -> str:
    """The id of the transition's event: its uid, phase and records, nothing timed."""
    last = incident.status.last_transition
    assert last is not None
    parts = [str(incident.metadata.get("uid", "")), last.phase]
    parts += [f"{index}/{r.kind}/{r.reason}" for index, r in enumerate(last.records)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cloudevent(incident: Incident, *, link_template: str | None = None) -> dict[str, Any]:
    """The transition as a CloudEvents 1.0 structured-mode event."""
    last = incident.status.last_transition
    assert last is not None
    metadata, spec, status = incident.metadata, incident.spec, incident.status
    namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
    data: dict[str, Any] = {
        "incident": incident.reference,
        "uid": metadata.get("uid", ""),
        "phase": last.phase,
        "records": [record.to_api() for record in last.records],
        "title": spec.title,
        "severity": spec.severity,
        "service": spec.service.to_api(),
        "alarm": {"name": spec.alarm.name, "state": status.alarm_state or spec.alarm.state},
    }
    for field in ("assessment", "acknowledgement", "remediation"):
        value = getattr(status, field)
        if value is not None:
            data[field] = value.to_api()
    link = incident_link(incident, link_template)
    if link:
        data["link"] = link
    return {
        "specversion": "1.0",
        "id": event_id(incident),
        "source": f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/incidents/{name}",
        "type": TYPE_PREFIX + last.phase.lower(),
        "subject": incident.reference,
        "time": last.at.isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }


def signature(secret: str, body: bytes, *, timestamp: int) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhooksChannel:
    name = "webhooks"

    def __init__(
        self,
        *,
        targets: Sequence[Target],
        delivered: Delivered,
        wait: float = 5.0,
        backoff: float = 1.0,
        link_template: str | None = None,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._targets = list(targets)
        self._delivered = delivered
        self._wait = wait
        self._link_template = link_template
        self._poster = Poster(timeout=timeout)
        self._clock = clock
        self.outbox: Outbox[Delivery] = Outbox(send=self._send, per_minute=None, backoff=backoff)

    def wants(self, incident: Incident, *, policy: Policy) -> bool:
        last = incident.status.last_transition
        return last is not None and bool(last.records)

    async def tell(self, incident: Incident, *, policy: Policy) -> Told:
        event = cloudevent(incident, link_template=self._link_template)
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        waiting = []
        for target in self._targets:
            record = DeliveryKey("webhooks", incident.reference, f"{event['id']}@{target.digest}")
            if await self._delivered.was(record):
                continue
            delivery = Delivery(target, body, event["id"], record)
            waiting.append((target, self.outbox.submit(target.digest, record.event, delivery)))
        refused = []
        queued = 0
        for target, sent in waiting:
            if not await wait_for(sent, seconds=self._wait):
                queued += 1
                continue
            try:
                sent.result()
            except Refused as refusal:
                refused.append(f"{_where(target.url)} refused event {event['id'][:12]}: {refusal}")
        if refused:
            raise ChannelFailed("; ".join(refused), retryable=False)
        if queued:
            return Told(
                note=f"event {event['id'][:12]} queued for {queued} of {len(self._targets)} "
                "target(s) (retried until taken); told again once sent",
                queued=True,
            )
        return Told(note=f"event {event['id'][:12]} delivered to {len(self._targets)} target(s)")

    async def _send(self, lane: str, delivery: Delivery) -> None:
        headers = {
            "Content-Type": CONTENT_TYPE,
            SIGNATURE_HEADER: signature(
                delivery.target.secret, delivery.body, timestamp=int(self._clock())
            ),
        }
        where = _where(delivery.target.url)
        await self._poster.post(
            delivery.target.url,
            body=delivery.body,
            headers=headers,
            what=f"event {delivery.event_id[:12]} at {where}",
        )
        crash_point("after-webhook")
        await record_taken(self._delivered, delivery.record)
        log.info(
            "webhook event sent",
            extra={"incident": delivery.record.incident_id, "event": delivery.event_id,
                   "target": where},
        )  # fmt: skip

    async def close(self) -> None:
        await self.outbox.close()
        await self._poster.close()


def _where(url: str) -> str:
    """The URL without its query (which may carry a token), for messages and logs."""
    return url.split("?", 1)[0]
