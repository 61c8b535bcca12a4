"""Delete finished Incidents once their retention period is over.

Finished: Resolved, Ignored or Failed (an Escalated Incident is a human's
until its alarm recovers, which resolves it). Its period is the `retention`
of the ResponsePolicy it was handled under, as that policy says now (the
built-in default's, 7 days, when it has none or the policy is gone), counted
from the last thing that happened to it: its last transition, or its last
alarm (an Ignored Incident keeps counting repeats). 0 keeps it forever.
Only the Incident goes: its timeline stays in DynamoDB under its own TTL.

The watch tells us of every finished Incident (a few strings each); one
task sleeps until the next one is due, or a minute at most so that a
changed policy applies soon, and deletes it with its uid and resourceVersion
as preconditions: an Incident that changed since we saw it is not deleted
on stale grounds (its own watch event brings the new state). Only the
leader runs this, as it runs everything that acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from .. import metrics
from ..models import DEFAULT_RETENTION_SECONDS, GROUP, VERSION, Incident
from .reconciler import Policies

log = logging.getLogger(__name__)

RETAINED_PHASES = frozenset({"Resolved", "Ignored", "Failed"})
# Look at least this often: a policy's retention may have been shortened.
MAX_SLEEP_SECONDS = 60.0
# After a failed delete (API server unreachable), look again this soon.
RETRY_SECONDS = 10.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Finished:
    namespace: str
    name: str
    uid: str
    resource_version: str
    at: datetime  # its last transition or alarm
    policy: str


class Retention:
    def __init__(
        self,
        *,
        api: client.ApiClient,
        policies: Policies,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._policies = policies
        self._clock = clock
        self._finished: dict[str, _Finished] = {}
        self._wake = asyncio.Event()
        # When the loop looks again by itself; None while it is looking.
        self._looks_at: datetime | None = None
        self._closed = False

    def observe(self, body: Mapping[str, Any]) -> None:
        """An Incident as the watch saw it."""
        metadata = body["metadata"]
        uid = metadata["uid"]
        status = body.get("status") or {}
        if self._closed or status.get("phase") not in RETAINED_PHASES:
            self._finished.pop(uid, None)
            return
        try:
            incident = Incident.model_validate(body)
        except ValueError:
            return  # not ours to judge: the reconciler reports invalid Incidents
        last = incident.status.last_transition
        times = [t for t in (last.at if last else None, incident.status.last_seen) if t]
        created = metadata.get("creationTimestamp")
        at = max(times) if times else datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        entry = _Finished(
            namespace=metadata["namespace"],
            name=metadata["name"],
            uid=uid,
            resource_version=metadata["resourceVersion"],
            at=at,
            policy=self._policies.for_incident(incident).name,
        )
        self._finished[uid] = entry
        # Wake the loop only for an Incident due before it looks again
        # anyway: at a restart among thousands of finished Incidents, a
        # wake-up for each made the loop go over all of them each time.
        due = self._due(entry)
        if due is not None and (self._looks_at is None or due < self._looks_at):
            self._wake.set()

    def forget(self, uid: str) -> None:
        self._finished.pop(uid, None)

    def policies_changed(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Delete what is due, then sleep until the next is; until closed."""
        while not self._closed:
            self._wake.clear()
            self._looks_at = None
            now = self._clock()
            due: list[_Finished] = []
            next_at: datetime | None = None
            for entry in list(self._finished.values()):
                at = self._due(entry)
                if at is None:
                    continue  # kept forever
                if at <= now:
                    due.append(entry)
                elif next_at is None or at < next_at:
                    next_at = at
            failed = False
            for entry in due:
                failed |= not await self._delete(entry)
            sleep = MAX_SLEEP_SECONDS
            if next_at is not None:
                sleep = min(sleep, (next_at - self._clock()).total_seconds())
            if failed:
                sleep = min(sleep, RETRY_SECONDS)
            self._looks_at = self._clock() + timedelta(seconds=max(sleep, 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(sleep, 0.01))

    def close(self) -> None:
        """Delete nothing more (a running delete ends on its own)."""
        self._closed = True
        self._finished.clear()
        self._wake.set()

    def _due(self, entry: _Finished) -> datetime | None:
        """When the Incident's retention ends; None if it is kept forever."""
        seconds = self._seconds(entry)
        return entry.at + timedelta(seconds=seconds) if seconds else None

    def _seconds(self, entry: _Finished) -> int:
        policy = self._policies.named(entry.namespace, entry.policy)
        return policy.spec.retention.seconds if policy else DEFAULT_RETENTION_SECONDS

    async def _delete(self, entry: _Finished) -> bool:
        """Delete one Incident; False if that should be tried again later."""
        options = {"preconditions": {"uid": entry.uid, "resourceVersion": entry.resource_version}}
        try:
            await asyncio.to_thread(
                self._objects.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                entry.namespace,
                "incidents",
                entry.name,
                body=options,
            )
        except client.ApiException as error:
            if error.status == 404:  # gone already
                self.forget(entry.uid)
                return True
            if error.status == 409:  # changed since: its watch event decides again
                return True
            log.warning(
                "could not delete a finished Incident",
                extra={"incident": entry.name, "namespace": entry.namespace,
                       "status": error.status},
            )  # fmt: skip
            return False
        except Exception as error:  # unreachable, timed out
            log.warning(
                "could not delete a finished Incident",
                extra={"incident": entry.name, "namespace": entry.namespace, "error": str(error)},
            )
            return False
        if self._finished.get(entry.uid) == entry:
            self.forget(entry.uid)
        metrics.RETENTION_DELETED.inc()
        log.info(
            "deleted after its retention period",
            extra={"incident": entry.name, "namespace": entry.namespace,
                   "finished": entry.at.isoformat(), "policy": entry.policy},
        )  # fmt: skip
        return True
