"""One pass over one Incident: read it, pick its policy, ask the phase machine
what next, announce it, write it, publish it.

Writes go through the status subresource with the resourceVersion the
decision was made on, so a decision never lands on an Incident that changed
under it (an approval clicked meanwhile, say). Changes that cannot matter to
the machine, like the webhook counting another occurrence, do not cost the
decision: we re-read, and if the machine's inputs are the same we write the
same transition again.

The passes are scheduled by the queue (`queue.py`: concurrency, backoff,
wake-ups); the channels are told by the announcer (`retell.py`); Events and
timeline entries are published after the write (`publish.py`), from the
records the write carries, so a crash between the two is repaired on the
next pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from .. import metrics
from ..crashpoints import crash_point
from ..grouping import alerts_of
from ..kube import patch_status_if_unchanged, read_incident
from ..models import GROUP, TERMINAL_PHASES, VERSION, Incident, LastTransition
from ..notify import Notifier
from ..policy import Policy, select
from ..timeline import Timeline
from .phases import Ports, Transition, Wait, advance
from .publish import Publisher, incident_id
from .queue import CONCURRENT_PASSES, PassQueue
from .retell import Announcer
from .silences import Silences

__all__ = ["Policies", "Reconciler", "incident_id", "utcnow"]

log = logging.getLogger(__name__)

MAX_REWRITES = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


class Policies:
    """The ResponsePolicies by namespace, kept current by watch events."""

    def __init__(self) -> None:
        self._by_namespace: dict[str, dict[str, Policy]] = {}

    def put(self, namespace: str, policy: Policy) -> None:
        self._by_namespace.setdefault(namespace, {})[policy.name] = policy

    def remove(self, namespace: str, name: str) -> None:
        self._by_namespace.get(namespace, {}).pop(name, None)

    def named(self, namespace: str, name: str) -> Policy | None:
        return self._by_namespace.get(namespace, {}).get(name)

    def for_incident(self, incident: Incident) -> Policy:
        namespace = incident.metadata.get("namespace", "")
        policies = self._by_namespace.get(namespace, {})
        # Once assessed, an Incident keeps the policy it was assessed under,
        # as long as that policy exists: no mid-flight change of rules.
        chosen = incident.status.assessment and incident.status.assessment.policy
        if chosen and chosen in policies:
            return policies[chosen]
        return select(policies.values(), incident.spec)


class Reconciler:
    """Reconciles Incidents in the background: `submit` a body the watch saw,
    `forget` a deleted Incident, `close` when no longer leading."""

    def __init__(
        self,
        *,
        api: client.ApiClient,
        ports: Ports,
        timeline: Timeline,
        policies: Policies,
        notifier: Notifier,
        clock: Callable[[], datetime] = utcnow,
        concurrency: int = CONCURRENT_PASSES,
        retell_after: float = 60.0,
        silences: Silences | None = None,
    ) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._ports = ports
        self._policies = policies
        self._silences = silences
        self._clock = clock
        self._queue = PassQueue(run=self._pass, read=self._read, concurrency=concurrency)
        self._publisher = Publisher(api=api, timeline=timeline, clock=clock)
        self._announcer = Announcer(
            objects=self._objects, notifier=notifier, clock=clock, retell_after=retell_after
        )

    # --- entry points ---------------------------------------------------------

    def submit(self, body: Mapping[str, Any], *, replace: bool = True) -> None:
        """Reconcile the Incident from this body soon; returns at once (see
        `PassQueue.submit`)."""
        self._queue.submit(body, replace=replace)

    @property
    def idle(self) -> bool:
        """No pass running and none waiting."""
        return self._queue.idle

    @property
    def depth(self) -> int:
        """Incidents waiting for a pass or in one."""
        return self._queue.depth

    async def close(self, *, grace: float) -> None:
        """Act no more: take no new pass, give the running ones `grace` seconds
        to finish, then cancel them (abandoned as by a crash, which every step
        survives: the next leader takes them up from the Incidents' status)."""
        await self._queue.close(grace=grace)

    def forget(self, uid: str) -> None:
        """The Incident is gone: drop everything kept about it."""
        self._queue.forget(uid)
        self._publisher.forget(uid)
        self._announcer.forget(uid)

    async def silences_changed(self, namespace: str) -> None:
        """A Silence of this namespace was made, edited or deleted: every
        Incident it may have muted is looked at again (now, not when the
        silence was due to end)."""
        listed = await asyncio.to_thread(
            self._objects.list_namespaced_custom_object, GROUP, VERSION, namespace, "incidents"
        )
        for body in listed["items"]:
            if (body.get("status") or {}).get("phase") == "Silenced":
                self.submit(body)

    # --- one pass -------------------------------------------------------------

    async def _pass(self, body: Mapping[str, Any]) -> None:
        with metrics.PASS_SECONDS.time():
            await self._reconcile(body)

    async def _reconcile(self, body: Mapping[str, Any]) -> None:
        incident = Incident.model_validate(body)
        name = incident.metadata["name"]
        await self._publisher.publish(incident)
        policy = self._policies.for_incident(incident)
        silences = (
            self._silences.in_namespace(incident.metadata.get("namespace", ""))
            if (self._silences is not None)
            else []
        )
        outcome = await advance(
            incident, policy=policy, ports=self._ports, now=self._clock(), silences=silences
        )
        if outcome is None or isinstance(outcome, Wait):
            # Nothing to decide now: a good time to retry a failed announcement.
            delays = [await self._announcer.retell(incident, policy)]
            if isinstance(outcome, Wait):
                delays.append(outcome.seconds)
            due = [delay for delay in delays if delay is not None]
            if due:
                self._queue.wake_later(incident.metadata, min(due))
            elif incident.status.phase in TERMINAL_PHASES:
                self._queue.cancel_wakeup(incident.metadata["uid"])
            return
        if not outcome.quiet:
            outcome = await self._announcer.announce(incident, outcome, policy)
        crash_point("before-write")
        for _ in range(MAX_REWRITES):
            written = await self._write(incident, outcome)
            if written is not None:
                crash_point("after-write")
                metrics.transition_written(incident, written)
                log.info(
                    "transition",
                    extra={
                        "incident": name,
                        "namespace": incident.metadata.get("namespace"),
                        "from": incident.status.phase,
                        "to": outcome.phase,
                        "reasons": [r.reason for r in outcome.records],
                    },
                )
                await self._publisher.publish(written, ours=True)
                await self._count_muted(incident, written)
                if outcome.wake_after is not None:
                    self._queue.wake_later(written.metadata, outcome.wake_after)
                return
            # Conflict. The same decision still holds if what it was made on
            # is unchanged (the webhook only counted another occurrence).
            fresh = await self._get(incident)
            if fresh is None or _inputs(fresh) != _inputs(incident):
                return  # its own watch event will decide again
            incident = fresh
        log.warning("gave up writing after conflicts", extra={"incident": name})

    async def _count_muted(self, before: Incident, after: Incident) -> None:
        """Tell the Silence that muted this Incident that it did (its MUTED column)."""
        silence = after.status.silence
        if self._silences is None or after.status.phase != "Silenced" or silence is None:
            return
        earlier = before.status.silence
        if before.status.phase == "Silenced" and earlier and earlier.name == silence.name:
            return  # the same silence, extended: counted already
        await self._silences.count_muted(after.metadata["namespace"], silence.name)

    async def _write(self, incident: Incident, transition: Transition) -> Incident | None:
        """Write the transition if the Incident is unchanged; None on conflict."""
        now = self._clock()
        last = LastTransition(at=now, phase=transition.phase, records=transition.records)
        status: dict[str, Any] = {
            **_first_count(incident),
            **transition.status,
            "phase": transition.phase,
            "conditions": [c.to_api() for c in transition.conditions],
            "lastTransition": last.to_api(),
            "observedGeneration": incident.metadata.get("generation"),
        }
        body = await asyncio.to_thread(
            patch_status_if_unchanged,
            self._objects,
            incident.metadata["namespace"],
            incident.metadata["name"],
            incident.metadata["resourceVersion"],
            status,
        )
        if body is None:
            return None
        return Incident.model_validate(body)

    async def _get(self, incident: Incident) -> Incident | None:
        body = await self._read(incident.metadata["namespace"], incident.metadata["name"])
        return Incident.model_validate(body) if body is not None else None

    async def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(read_incident, self._objects, namespace, name)


def _first_count(incident: Incident) -> dict[str, Any]:
    """The status of an Incident nobody counted yet: its creation was the alarm.

    The webhook's create is the first occurrence and costs no status write;
    the operator's first write records it. Computed against the object being
    written, so it never overwrites a count the webhook made meanwhile.
    """
    status, fields = incident.status, dict[str, Any]()
    created = incident.metadata.get("creationTimestamp")
    if not status.occurrences:
        fields["occurrences"] = 1
    if status.first_seen is None and created:
        fields["firstSeen"] = created
    if status.last_seen is None and created:
        fields["lastSeen"] = created
    if status.alarm_state is None:
        fields["alarmState"] = incident.spec.alarm.state
    if not status.alerts:
        # Its one alert, as counted above (the webhook lists a group's).
        alerts = alerts_of(incident.to_api())
        alerts[0].update({k: v for k, v in fields.items() if k in ("firstSeen", "lastSeen")})
        alerts[0]["state"] = fields.get("alarmState", alerts[0]["state"])
        fields["alerts"], fields["alertCount"] = alerts, 1
    return fields


def _inputs(incident: Incident) -> tuple[Any, ...]:
    """What the phase machine decides on; a change elsewhere does not matter."""
    status = incident.status
    return (
        status.phase,
        status.alarm_state == "OK",
        status.approval.to_api() if status.approval else None,
        status.remediation.to_api() if status.remediation else None,
        status.assessment.to_api() if status.assessment else None,
    )
