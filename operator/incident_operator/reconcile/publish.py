"""Publish what happened to an Incident: Kubernetes Events and timeline entries.

A transition's records travel inside its status write
(`status.lastTransition`), and are published after it, so a crash between
the two is repaired on the next pass: publishing is idempotent
(deterministic Event names, conditional timeline puts). Every record is a
timeline entry; the Events are one per reason of a transition (see
`_events`). The alarm's repeats, which the webhook counts, become timeline
entries here too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes import client

from ..models import API_VERSION, Incident, Record
from ..timeline import Entry, Timeline

log = logging.getLogger(__name__)

COMPONENT = "incident-operator"
# An Event's message at most (one record's message is at most this too).
MAX_EVENT_MESSAGE = 1024


def incident_id(incident: Incident) -> str:
    """The timeline's partition key: namespace/name."""
    return f"{incident.metadata['namespace']}/{incident.metadata['name']}"


@dataclass(slots=True)
class _Published:
    """What this process published of one Incident, to skip idempotent re-writes."""

    transition: datetime | None = None  # the lastTransition.at published
    occurrences: int | None = None  # the count published


class Publisher:
    """Publishes each Incident's last transition and new occurrences, once."""

    def __init__(
        self, *, api: client.ApiClient, timeline: Timeline, clock: Callable[[], datetime]
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._timeline = timeline
        self._clock = clock
        self._instance = socket.gethostname()
        self._published: dict[str, _Published] = {}

    def forget(self, uid: str) -> None:
        """The Incident is gone: drop what was kept about it."""
        self._published.pop(uid, None)

    async def publish(self, incident: Incident, *, ours: bool = False) -> None:
        """Publish the last transition unless this process did; `ours`: it
        was just written by this process, so nobody published it yet."""
        published = self._published.setdefault(incident.metadata["uid"], _Published())
        entries = self._occurrence_entries(incident, published)
        last = incident.status.last_transition
        if last is not None and published.transition != last.at:
            records = [
                Entry(
                    incident_id=incident_id(incident),
                    ts=f"{last.at.isoformat()}#{index:02d}#{record.kind}",
                    kind=record.kind,
                    message=record.message,
                    phase=last.phase,
                    detail={"reason": record.reason, **_detail(incident, record.kind)},
                )
                for index, record in enumerate(last.records)
            ]
            # Written by an earlier process: published, or cut short by a
            # crash? The last entry is written last, after every Event, so
            # if it is stored, all is: one read instead of rewriting all (on
            # a restart among thousands of finished Incidents).
            if records and (ours or not await self._timeline.has(records[-1])):
                for index, reason, message, warning in _events(last.records):
                    await self._post_event(incident, last.at, index, reason, message,
                                           warning=warning)  # fmt: skip
                entries += records
        if entries:
            await self._timeline.record(entries)
        if last is not None:
            published.transition = last.at
        published.occurrences = incident.status.occurrences

    def _occurrence_entries(self, incident: Incident, published: _Published) -> list[Entry]:
        # The webhook counts; the timeline learns of repeats here, one entry
        # per count we see (a storm coalesced into one write is one entry).
        count = incident.status.occurrences
        if count <= 1 or published.occurrences == count:
            return []
        seen = incident.status.last_seen or self._clock()
        return [
            Entry(
                incident_id=incident_id(incident),
                ts=f"{seen.isoformat()}#occurrence#{count:09d}",
                kind="occurrence",
                message=f"alarm fired again: {count} occurrences",
                phase=incident.status.phase,
                detail={"occurrences": count},
            )
        ]

    async def _post_event(
        self, incident: Incident, at: datetime, index: int, reason: str, message: str, *,
        warning: bool,
    ) -> None:  # fmt: skip
        metadata = incident.metadata
        digest = hashlib.sha256(f"{metadata['uid']}/{at.isoformat()}/{index}".encode()).hexdigest()
        stamp = at.isoformat()
        event = {
            "metadata": {"name": f"{metadata['name']}.{digest[:16]}"},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": "Incident",
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await asyncio.to_thread(
                self._core.create_namespaced_event, metadata["namespace"], event
            )
        except client.ApiException as error:
            if error.status != 409:  # 409: posted before this crash or restart
                log.warning(
                    "could not post event",
                    extra={"incident": metadata["name"], "status": error.status},
                )


def _events(records: list[Record]) -> list[tuple[int, str, str, bool]]:
    """The Events of one transition: (index, reason, message, warning), one per reason.

    A transition may record one reason twice: a rollout that timed out is
    both the end of the action and the escalation, each `RestartTimedOut`
    with the same message. Both stay in the timeline, but as Events they are
    one thing: one per reason, with each distinct message once, a Warning if
    any record is one. Each keeps the name of its reason's first record
    (by its index), so an Event posted before is found again (409).
    """
    found: dict[str, tuple[int, list[str], bool]] = {}
    for index, record in enumerate(records):
        first, messages, warning = found.setdefault(record.reason, (index, [], False))
        if record.message not in messages:
            messages.append(record.message)
        found[record.reason] = (first, messages, warning or record.warning)
    return [
        (index, reason, "; ".join(messages)[:MAX_EVENT_MESSAGE], warning)
        for reason, (index, messages, warning) in found.items()
    ]


def _detail(incident: Incident, kind: str) -> dict[str, Any]:
    """The part of the status a timeline entry of this kind is about."""
    status = incident.status
    field = {
        "assessment": "assessment",
        "escalated": "assessment",
        "approval_requested": "approval",
        "approval": "approval",
        "action_started": "remediation",
        "action_finished": "remediation",
    }.get(kind)
    part = getattr(status, field) if field else None
    return {field: part.to_api()} if field and part is not None else {}
