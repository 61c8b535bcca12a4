"""Load an Incident, ask the phase machine what next, write it, publish it.

Writes go through the status subresource with the resourceVersion the
decision was made on, so a decision never lands on an Incident that changed
under it (an approval clicked meanwhile, say). Changes that cannot matter to
the machine, like the webhook counting another occurrence, do not cost the
decision: we re-read, and if the machine's inputs are the same we write the
same transition again.

Passes run in the background, at most CONCURRENT_PASSES at a time, never
two for one Incident at once. What waits for a turn is the newest body of
each Incident, packed small (see `submit`): at startup every Incident
arrives at once, and holding thousands of handler calls, or thousands of
bodies as parsed JSON, would set the process's memory high for good.
Incidents that still need a decision go first; finished ones (whose pass
only repairs publishing) wait behind them.

Publishing (Kubernetes Events and timeline entries) happens after the write,
and the records travel inside the write (`status.lastTransition`), so a crash
between the two is repaired on the next pass: publishing is idempotent
(deterministic Event names, conditional timeline puts). Every record is a
timeline entry; the Events are one per reason of a transition (see
`_events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from .. import metrics
from ..crashpoints import crash_point
from ..kube import patch_status_if_unchanged, read_incident
from ..models import (
    API_VERSION,
    CLOSED_PHASES,
    HANDED_OFF_PHASES,
    TERMINAL_PHASES,
    Incident,
    IncidentStatus,
    LastTransition,
    Record,
)
from ..notify import Notifier
from ..policy import Policy, select
from ..timeline import Entry, Timeline
from .conditions import get_condition, set_condition
from .phases import Ports, Transition, Wait, advance

log = logging.getLogger(__name__)

COMPONENT = "incident-operator"
MAX_REWRITES = 5
CONCURRENT_PASSES = 64
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
# A transition a channel could not be told of is told again this many times,
# after the retell delay, doubling each time.
RETELL_ATTEMPTS = 5
# An Event's message at most (one record's message is at most this too).
MAX_EVENT_MESSAGE = 1024


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
    ) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._ports = ports
        self._timeline = timeline
        self._policies = policies
        self._notifier = notifier
        self._clock = clock
        self._wakeups: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: dict[str, int] = {}
        self._retry_due: dict[str, float] = {}  # uid -> event loop time of its retry
        self._retell_after = max(retell_after, 1.0)
        self._retells: dict[str, _Retell] = {}
        # Passes to run: the newest body of each Incident waiting (packed),
        # the order they became due, the Incidents in a pass now, the workers.
        self._concurrency = concurrency
        self._waiting: dict[str, tuple[bool, bytes]] = {}  # uid -> (open, packed body)
        self._due: deque[str] = deque()
        self._due_finished: deque[str] = deque()  # after every one in _due
        self._running: set[str] = set()
        self._workers: set[asyncio.Task[None]] = set()
        # What this process already published, to skip idempotent re-writes.
        self._published: dict[str, str] = {}  # uid -> the latest transition published
        self._occurrences_published: dict[str, int] = {}
        self._instance = socket.gethostname()
        self._closed = False

    # --- entry points ---------------------------------------------------------

    def submit(self, body: Mapping[str, Any], *, replace: bool = True) -> None:
        """Reconcile the Incident from this body soon; returns at once.

        A body waiting for its turn is replaced by a newer one (watch events
        arrive in order), so an Incident waits at most once, with its latest
        state. `replace=False` (a wake-up's read) leaves a waiting body be:
        a pass is due anyway, and a read may be older than the watch.
        """
        uid = body["metadata"]["uid"]
        if self._closed or (uid in self._waiting and not replace):
            return
        is_open = _open(body)
        waiting = self._waiting.get(uid)
        # Due once; an Incident that reopens while waiting as finished is due now.
        if uid not in self._running and (waiting is None or (is_open and not waiting[0])):
            (self._due if is_open else self._due_finished).append(uid)
        self._waiting[uid] = (is_open, _pack(body))
        if len(self._workers) < self._concurrency:
            worker = asyncio.get_running_loop().create_task(self._work())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    @property
    def idle(self) -> bool:
        """No pass running and none waiting."""
        return not self._waiting and not self._running

    @property
    def depth(self) -> int:
        """Incidents waiting for a pass or in one."""
        return len(self._waiting) + len(self._running)

    async def close(self, *, grace: float) -> None:
        """Act no more: take no new pass, give the running ones `grace` seconds
        to finish, then cancel them (abandoned as by a crash, which every step
        survives: the next leader takes them up from the Incidents' status)."""
        self._closed = True
        self._waiting.clear()
        for uid in list(self._wakeups):
            self._cancel_wakeup(uid)
        tasks = self._workers | self._tasks
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _work(self) -> None:
        """Run due passes one after the other until none is due."""
        while self._due or self._due_finished:
            uid = (self._due or self._due_finished).popleft()
            if uid in self._running or uid not in self._waiting:
                continue  # in a pass (due again after it), done, or forgotten
            body = _unpack(self._waiting.pop(uid)[1])
            self._running.add(uid)
            try:
                with metrics.PASS_SECONDS.time():
                    await self._pass(body)
            finally:
                self._running.discard(uid)
                if uid in self._waiting:  # changed during the pass: again
                    is_open = self._waiting[uid][0]
                    (self._due if is_open else self._due_finished).append(uid)

    async def _pass(self, body: Mapping[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        try:
            await self._reconcile(body)
        except Exception:
            # kopf does not retry event handlers: we do, with backoff, from
            # a fresh read (the failure may have been a stale object).
            name = body["metadata"].get("name")
            delay = self._backoff(uid)
            if delay is None:
                log.exception("reconcile failed; its retry is due", extra={"incident": name})
                return
            log.exception("reconcile failed; retrying", extra={"incident": name, "retry_in": delay})
            with contextlib.suppress(ValueError):  # an invalid body cannot be retried
                self._wake_later(Incident.model_validate(body), delay)
        else:
            self._failures.pop(uid, None)
            self._retry_due.pop(uid, None)

    def _backoff(self, uid: str) -> float | None:
        """Seconds until the next try after a failure of this Incident's, doubling
        with each failure; None when a retry is due already.

        A pass that fails while a retry is due (the watch's event of a write
        the failed pass made, say) fails for the same cause: it neither moves
        the retry nor lengthens the backoff, so one outage costs one step.
        """
        now = asyncio.get_running_loop().time()
        if self._retry_due.get(uid, now) > now:
            return None
        failures = self._failures.get(uid, 0) + 1
        self._failures[uid] = failures
        delay = float(min(RETRY_BASE_SECONDS * 2 ** (failures - 1), RETRY_MAX_SECONDS))
        self._retry_due[uid] = now + delay
        return delay

    def forget(self, uid: str) -> None:
        """The Incident is gone: drop everything kept about it."""
        self._waiting.pop(uid, None)
        self._cancel_wakeup(uid)
        self._occurrences_published.pop(uid, None)
        self._published.pop(uid, None)
        self._failures.pop(uid, None)
        self._retry_due.pop(uid, None)
        self._retells.pop(uid, None)

    # --- one pass -------------------------------------------------------------

    async def _reconcile(self, body: Mapping[str, Any]) -> None:
        incident = Incident.model_validate(body)
        name = incident.metadata["name"]
        await self._publish_pending(incident)
        policy = self._policies.for_incident(incident)
        outcome = await advance(incident, policy=policy, ports=self._ports, now=self._clock())
        if outcome is None or isinstance(outcome, Wait):
            # Nothing to decide now: a good time to retry a failed announcement.
            delays = [await self._retell(incident, policy)]
            if isinstance(outcome, Wait):
                delays.append(outcome.seconds)
            due = [delay for delay in delays if delay is not None]
            if due:
                self._wake_later(incident, min(due))
            elif incident.status.phase in TERMINAL_PHASES:
                self._cancel_wakeup(incident.metadata["uid"])
            return
        outcome = await self._announce(incident, outcome, policy)
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
                await self._publish_pending(written, ours=True)
                if outcome.wake_after is not None:
                    self._wake_later(written, outcome.wake_after)
                return
            # Conflict. The same decision still holds if what it was made on
            # is unchanged (the webhook only counted another occurrence).
            fresh = await self._get(incident)
            if fresh is None or _inputs(fresh) != _inputs(incident):
                return  # its own watch event will decide again
            incident = fresh
        log.warning("gave up writing after conflicts", extra={"incident": name})

    async def _announce(
        self, incident: Incident, transition: Transition, policy: Policy
    ) -> Transition:
        """Tell the channels, and carry what they report into the same write."""
        status = IncidentStatus.model_validate(
            {
                **incident.status.to_api(),
                **transition.status,
                "phase": transition.phase,
                "conditions": [c.to_api() for c in transition.conditions],
                # What this transition records, for the channels to tell.
                "lastTransition": LastTransition(
                    at=self._clock(), phase=transition.phase, records=transition.records
                ).to_api(),
            }
        )
        projected = incident.model_copy(update={"status": status})
        announced = await self._notifier.announce(projected, policy=policy)
        fields = dict(transition.status)
        if announced.notifications:
            current = status.notifications.to_api() if status.notifications else {}
            fields["notifications"] = {**current, **announced.notifications}
        conditions = set_condition(
            transition.conditions,
            type="Notified",
            status=announced.status,
            reason=announced.reason,
            message=announced.message,
            now=self._clock(),
        )
        return replace(transition, status=fields, conditions=conditions)

    async def _retell(self, incident: Incident, policy: Policy) -> float | None:
        """Tell the channels again of a transition some could not be told of.

        The Notified condition says a channel failed (down, throttled, its
        breaker open) for the current transition. After `retell_after`
        seconds, then twice that and so on, RETELL_ATTEMPTS times, the
        notifier is asked again: channels find what they already did (a
        Slack message by its metadata, a Jira issue by its label, an email
        by its claim), so the ones that had succeeded do nothing twice.
        Returns the seconds until the next retell, or None if none is due.
        """
        uid = incident.metadata["uid"]
        notified = get_condition(incident.status.conditions, "Notified")
        last = incident.status.last_transition
        if notified is None or notified.status != "False" or last is None:
            self._retells.pop(uid, None)
            return None
        now = asyncio.get_running_loop().time()
        state = self._retells.get(uid)
        if state is None or state.transition != last.at:
            state = self._retells[uid] = _Retell(last.at, 0, now + self._retell_after)
        if state.made >= RETELL_ATTEMPTS:
            return None  # the condition keeps saying what failed
        if now < state.next_at:
            return state.next_at - now
        state.made += 1
        state.next_at = now + self._retell_after * 2**state.made
        announced = await self._notifier.announce(incident, policy=policy)
        notifications = incident.status.notifications
        fields = {
            "notifications": {
                **(notifications.to_api() if notifications else {}),
                **announced.notifications,
            },
            "conditions": [
                c.to_api()
                for c in set_condition(
                    incident.status.conditions,
                    type="Notified",
                    status=announced.status,
                    reason=announced.reason,
                    message=announced.message,
                    now=self._clock(),
                )
            ],
        }
        log.info(
            "notifications retold",
            extra={"incident": incident.metadata["name"], "attempt": state.made,
                   "notified": announced.status, "reason": announced.reason},
        )  # fmt: skip
        # On a conflict the next pass looks again; what was told is found then.
        await asyncio.to_thread(
            patch_status_if_unchanged,
            self._objects,
            incident.metadata["namespace"],
            incident.metadata["name"],
            incident.metadata["resourceVersion"],
            fields,
        )
        return state.next_at - now if announced.status == "False" else None

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
        body = await asyncio.to_thread(
            read_incident,
            self._objects,
            incident.metadata["namespace"],
            incident.metadata["name"],
        )
        return Incident.model_validate(body) if body is not None else None

    # --- publishing: Events and the timeline ----------------------------------

    async def _publish_pending(self, incident: Incident, *, ours: bool = False) -> None:
        """Publish the last transition unless this process did; `ours`: it
        was just written by this process, so nobody published it yet."""
        entries = self._occurrence_entries(incident)
        last = incident.status.last_transition
        key = f"{incident.metadata['uid']}/{last.at.isoformat()}" if last else None
        uid = incident.metadata["uid"]
        if last is not None and self._published.get(uid) != key:
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
        if key is not None:
            self._published[uid] = key
        self._occurrences_published[uid] = incident.status.occurrences

    def _occurrence_entries(self, incident: Incident) -> list[Entry]:
        # The webhook counts; the timeline learns of repeats here, one entry
        # per count we see (a storm coalesced into one write is one entry).
        uid = incident.metadata["uid"]
        count = incident.status.occurrences
        if count <= 1 or self._occurrences_published.get(uid) == count:
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

    # --- wake-ups -------------------------------------------------------------

    def _wake_later(self, incident: Incident, seconds: float) -> None:
        metadata = incident.metadata
        self._wake_by_name(metadata["uid"], metadata["namespace"], metadata["name"], seconds)

    def _wake_by_name(self, uid: str, namespace: str, name: str, seconds: float) -> None:
        self._cancel_wakeup(uid)
        if self._closed:
            return
        loop = asyncio.get_running_loop()

        def wake() -> None:
            self._wakeups.pop(uid, None)
            task = loop.create_task(self._wake(uid, namespace, name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._wakeups[uid] = loop.call_later(max(seconds, 0.05), wake)

    def _cancel_wakeup(self, uid: str) -> None:
        handle = self._wakeups.pop(uid, None)
        if handle:
            handle.cancel()

    async def _wake(self, uid: str, namespace: str, name: str) -> None:
        try:
            body = await asyncio.to_thread(read_incident, self._objects, namespace, name)
        except client.ApiException as error:
            problem: object = f"API server answered {error.status}"
        except Exception as error:  # unreachable, timed out: try again
            problem = error
        else:
            if body is not None:  # else deleted: nothing left to do
                self.submit(body, replace=False)
            return
        # The read failed, not the Incident: without another wake-up it would
        # wait for a change that may never come (unless one is due already).
        delay = self._backoff(uid)
        log.warning(
            "wake-up failed; trying again" if delay is not None else "wake-up failed; retry due",
            extra={"incident": name, "error": str(problem), "retry_in": delay},
        )
        if delay is not None and uid not in self._wakeups:
            self._wake_by_name(uid, namespace, name, delay)


@dataclass
class _Retell:
    """Retells of one transition's failed announcement (see `_retell`)."""

    transition: datetime  # its lastTransition.at
    made: int
    next_at: float  # event loop time


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


def _open(body: Mapping[str, Any]) -> bool:
    """Whether the phase machine may still decide something for this body."""
    status = body.get("status") or {}
    phase = status.get("phase")
    if phase in CLOSED_PHASES:
        return False
    if phase in HANDED_OFF_PHASES:
        return bool(status.get("alarmState") == "OK")  # recovered: to be resolved
    return True


def _pack(body: Mapping[str, Any]) -> bytes:
    """A body as compact JSON, without managedFields (the API server's field
    bookkeeping, which the operator never reads): a waiting body costs a
    fraction of its parsed form."""
    metadata = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
    return json.dumps({**body, "metadata": metadata}, separators=(",", ":")).encode()


def _unpack(packed: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(packed)
    return body


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
    return fields


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


def incident_id(incident: Incident) -> str:
    """The timeline's partition key: namespace/name."""
    return f"{incident.metadata['namespace']}/{incident.metadata['name']}"


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
