"""Record that a person took an Incident: `status.acknowledgement`, once.

One way for every place a person acknowledges from (a Slack button, a
PagerDuty webhook): written through the status subresource with the
resourceVersion it was judged on, and judged again on the fresh object when
someone else wrote meanwhile. The first acknowledgement stays; an Incident
that ended (Resolved, Failed, Ignored) takes none. The operator then records
the Acknowledged condition, Event and timeline entry (`reconcile/phases.py`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from kubernetes import client

from .kube import patch_status_if_unchanged, read_incident
from .models import CLOSED_PHASES, Incident

WRITE_ATTEMPTS = 3
# Phases where there is nothing left to take on.
ENDED = CLOSED_PHASES | {"Ignored"}

Result = Literal["acknowledged", "already_acknowledged", "ended", "unknown_incident", "conflict"]


@dataclass(frozen=True)
class Acknowledged:
    result: Result
    incident: Incident | None  # as it was last read (None: it does not exist)


async def acknowledge(
    objects: client.CustomObjectsApi,
    namespace: str,
    name: str,
    *,
    by: str,
    via: Literal["slack", "pagerduty"],
    at: datetime | None = None,
    uid: str | None = None,
    incident: Incident | None = None,
) -> Acknowledged:
    """Acknowledge the Incident (`uid`, when given, must still be it); start
    from `incident` when the caller has just read it."""
    for _ in range(WRITE_ATTEMPTS):
        if incident is None:
            body = await asyncio.to_thread(read_incident, objects, namespace, name)
            incident = Incident.model_validate(body) if body is not None else None
        if incident is None or (uid is not None and incident.metadata.get("uid") != uid):
            return Acknowledged("unknown_incident", incident)
        status = incident.status
        if status.acknowledgement is not None:
            return Acknowledged("already_acknowledged", incident)
        if (status.phase or "Triggered") in ENDED:
            return Acknowledged("ended", incident)
        when = (at or datetime.now(UTC)).astimezone(UTC).isoformat()
        written = await asyncio.to_thread(
            patch_status_if_unchanged,
            objects,
            namespace,
            name,
            incident.metadata["resourceVersion"],
            {"acknowledgement": {"by": by, "at": when, "via": via}},
        )
        if written is not None:
            return Acknowledged("acknowledged", Incident.model_validate(written))
        incident = None  # someone wrote meanwhile: judge the fresh one
    return Acknowledged("conflict", incident)
