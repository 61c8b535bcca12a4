"""Record alarms into Incidents: exactly one Incident per alarm, exact counts.

Correctness rests on the API server, not on this process:

- Names are deterministic (see `names.py`), so concurrent deliveries of one
  alarm, in this process or another replica, all aim at the same object and
  `create` lets exactly one of them win (409 for the others).
- Every count is a status patch carrying the `resourceVersion` it was computed
  from: a concurrent writer makes it fail with 409 and we recompute. No lost
  updates, no double counts.

Speed comes from coalescing: deliveries for one fingerprint that arrive while
a write for it is in flight join a batch, and the batch lands as one patch
(`occurrences += n`). Each sender is answered only after the patch holding
its alarm succeeded, so an acknowledged alarm is a counted alarm.

A storm is paced, to spare the API server and etcd the rest of the cluster
needs: an Incident written less than `write_interval` ago collects its
deliveries until the interval is up, then takes them in one patch. An idle
Incident (a new alarm, a repeat after a quiet spell) is written at once. So
an Incident costs at most about one write per interval however fast its
alarm fires, and a sender waits at most about one interval more.

A grouping policy (`grouping.py`) makes the group, not the fingerprint, the
key: the Incident is named after the group, its alarms are batched together,
and each is one of its `status.alerts`. An alarm joins the group's open
Incident if it is one of its alerts already or arrives within the window of
its creation; else it goes on to the next generation, which it may open.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from kubernetes import client

from ..grouping import Group, alerts_of
from ..models import API_VERSION, CLOSED_PHASES, GROUP, MAX_ALERTS, IncidentStatus
from ..remediate.target import service_name
from .alarm import InvalidAlarm, ReceivedAlarm
from .apiserver import TRANSPORT_ERRORS, ApiError, IncidentsApi
from .names import fingerprint_hash, group_incident_name, incident_name, label_value
from .shedding import give_back_slot

log = logging.getLogger(__name__)

Result = Literal["created", "counted", "redelivery", "recovered", "no_open_incident"]

DELIVERY_IDS_KEPT = 64
# A delivery that counts nothing (a redelivery, Alertmanager's repeat of a
# firing alert) still moves lastSeen, if it is this much newer: a burst of
# retries costs no writes, a repeat every few minutes does.
LAST_SEEN_RESOLUTION_SECONDS = 1.0
# The delivery that created an Incident (status cannot be set on create).
FIRST_DELIVERY = f"{GROUP}/first-delivery"
MAX_ATTEMPTS = 30
# Incidents whose latest version this process keeps, to patch without a read.
OBJECTS_KEPT = 10_000


class ApiUnavailable(Exception):
    """The API server could not be reached or failed: the sender should retry (503)."""


@dataclass(frozen=True)
class Outcome:
    result: Result
    incident: str | None
    occurrences: int


@dataclass
class _Batch:
    group: Group | None
    items: list[tuple[ReceivedAlarm, asyncio.Future[Outcome]]] = field(default_factory=list)


Grouper = Callable[[ReceivedAlarm], Group | None]
T = TypeVar("T")


class AlarmRecorder:
    def __init__(
        self,
        *,
        api: client.ApiClient,
        namespace: str,
        request_timeout: tuple[float, float] = (3.0, 10.0),
        connections: int = 32,
        groups: Grouper | None = None,
        write_interval: float = 0.5,
    ) -> None:
        """`groups` tells an alarm's group (the policies' grouping); None: no
        grouping. `write_interval`: the seconds an Incident written recently
        collects deliveries before its next write (0: no pacing).
        `connections`: the most writes in flight to the API server at once."""
        self._groups = groups
        self._interval = write_interval
        # When each key was last written (event-loop time), while it may matter.
        self._written: dict[str, float] = {}
        self._incidents = IncidentsApi(
            api.configuration, namespace, connections=connections, timeout=request_timeout
        )
        self._pending: dict[str, _Batch] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._flushing: set[asyncio.Task[None]] = set()
        # Which generation of an alarm's incident was open last time: saves
        # walking past closed incidents on every delivery.
        self._generation: dict[str, int] = {}
        self._last: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def close(self) -> None:
        """Close the connections to the API server."""
        await self._incidents.close()

    async def record(self, alarm: ReceivedAlarm) -> Outcome:
        """Count one alarm delivery; return once it is durably recorded."""
        group = self._groups(alarm) if self._groups is not None else None
        key = _key(alarm, group)
        loop = asyncio.get_running_loop()
        if self._written.get(key, -self._interval) + self._interval > loop.time():
            # Its Incident was written a moment ago: this alarm waits for the
            # paced write (`_flush`) and costs nothing more meanwhile.
            give_back_slot()
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = _Batch(group)
            # Keep a reference: the event loop holds tasks only weakly.
            task = asyncio.create_task(self._flush(key, batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        future: asyncio.Future[Outcome] = loop.create_future()
        batch.items.append((alarm, future))
        return await future

    async def _flush(self, key: str, batch: _Batch) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        loop = asyncio.get_running_loop()
        async with lock:
            pause = self._written.get(key, -self._interval) + self._interval - loop.time()
            if pause > 0:
                # Written a moment ago: a hot Incident. Deliveries arriving
                # meanwhile join this batch and share its write.
                await asyncio.sleep(pause)
            self._mark_written(key, loop.time())
            # Close this batch: deliveries from now on form the next one,
            # which waits on the lock while this one is written.
            if self._pending.get(key) is batch:
                del self._pending[key]
            alarms = [alarm for alarm, _ in batch.items]
            try:
                outcomes = await self._apply_all(alarms, batch.group)
            except BaseException as error:
                for _, future in batch.items:
                    if not future.done():
                        future.set_exception(error)
                if not isinstance(error, Exception):
                    raise
            else:
                for (_, future), outcome in zip(batch.items, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        if key not in self._pending and not lock.locked():
            self._locks.pop(key, None)

    def _mark_written(self, key: str, now: float) -> None:
        self._written[key] = now
        if len(self._written) > OBJECTS_KEPT:
            # Forget the keys idle for longer than the interval: they pace nothing.
            self._written = {k: t for k, t in self._written.items() if now - t < self._interval}

    # --- the writes -------------------------------------------------------------

    async def _apply_all(self, alarms: list[ReceivedAlarm], group: Group | None) -> list[Outcome]:
        # Consecutive deliveries in the same state share one write; a state
        # change (ALARM then OK) starts another, so no recovery is lost.
        outcomes: list[Outcome] = []
        start = 0
        for end in range(1, len(alarms) + 1):
            if end == len(alarms) or alarms[end].alarm.state != alarms[start].alarm.state:
                run = alarms[start:end]
                results: dict[int, Outcome] = {}
                await self._apply(run, group, None, results)
                outcomes += [results[id(alarm)] for alarm in run]
                start = end
        return outcomes

    async def _apply(
        self,
        alarms: list[ReceivedAlarm],
        group: Group | None,
        generation: int | None,
        results: dict[int, Outcome],
    ) -> None:
        """Record `alarms` (one state, one key) on their Incident; each one's
        outcome goes into `results`, by id."""
        first = alarms[0]
        key = _key(first, group)
        # Where to start: the oldest generation open last time, unless the
        # caller goes on from one (a group's alarms after its window).
        walking = generation is None
        if generation is None:
            generation = self._generation.get(key, 1)
        # The create itself is the first occurrence (an Incident that exists
        # has fired at least once), so a new alarm costs one write. If this
        # call created the Incident, that alarm is counted already.
        counted_by_create: ReceivedAlarm | None = None
        for attempt in range(MAX_ATTEMPTS):
            name = (
                group_incident_name(group, generation)
                if group is not None
                else incident_name(
                    service=service_name(first.service), fingerprint=key, generation=generation
                )
            )
            # The object as this process last wrote or read it: if nobody else
            # wrote since, the patch below needs no read first; if somebody
            # did, its resourceVersion makes the patch fail and we read.
            current = self._recall(name) if attempt == 0 else None
            if (
                current is None
                and attempt == 0
                and key not in self._generation
                and (first.alarm.state == "ALARM")
            ):
                # An alarm this process has not seen is most likely new: create
                # first and save a read; a 409 sends us to the read.
                current = await self._create(name, first, group)
                counted_by_create = first if current is not None else None
            if current is None:
                current = await self._get(name)
            if current is not None:
                self._remember(name, current)
            if current is None:
                if first.alarm.state != "ALARM":
                    # A recovery (or no data) with nothing open: nothing to do.
                    for alarm in alarms:
                        results[id(alarm)] = Outcome("no_open_incident", None, 0)
                    return
                current = await self._create(name, first, group)
                if current is None:  # someone else created it just now
                    continue
                counted_by_create = first
            status = current.get("status") or {}
            seen = _delivery_ids(current)
            # Escalated and Ignored incidents stay open and keep counting until
            # the alarm recovers, so a flapping alarm does not flood the cluster.
            if status.get("phase") in CLOSED_PHASES and counted_by_create is None:
                fresh = _not_seen_before(alarms, seen)
                if not fresh:
                    for alarm in alarms:
                        results[id(alarm)] = Outcome("redelivery", name, _count(status))
                    return
                generation += 1
                continue
            if walking:
                self._generation[key] = generation  # open: its alarms count here
            if group is not None and counted_by_create is None:
                # Alarms that are not this Incident's and came after its
                # window go on to the next generation of the group.
                later = _after_window(current, alarms, group)
                if later:
                    await self._apply(later, group, generation + 1, results)
                    alarms = [alarm for alarm in alarms if alarm not in later]
                    if not alarms:
                        return
            pending = [alarm for alarm in alarms if alarm is not counted_by_create]
            fresh = _not_seen_before(pending, seen)
            patch = _status_patch(
                current,
                alarms,
                fresh,
                seen,
                created=counted_by_create is not None,
                resolve_when=group.resolve_when if group is not None else "all",
            )
            occurrences = _count(status)
            if patch:
                try:
                    written = await self._call(
                        self._incidents.patch_status_if_unchanged(
                            name, current["metadata"]["resourceVersion"], patch["status"]
                        )
                    )
                except ApiError as error:
                    if error.status == 404:  # deleted since we last saw it
                        self._forget(name)
                        continue
                    if error.status == 422:
                        raise InvalidAlarm(
                            f"the API server refused the count: {error.body}"
                        ) from error
                    raise
                if written is None:
                    # Someone wrote in between; back off a little and recompute.
                    self._forget(name)
                    if attempt:
                        await asyncio.sleep(random.uniform(0, 0.005 * attempt))
                    continue
                self._remember(name, written)
                occurrences = _count(written.get("status") or {})
            counted = {id(alarm) for alarm in fresh}
            repeat: Result = "counted" if first.alarm.state == "ALARM" else "recovered"
            for alarm in alarms:
                results[id(alarm)] = (
                    Outcome("created", name, occurrences)
                    if alarm is counted_by_create
                    else Outcome(
                        repeat if id(alarm) in counted else "redelivery", name, occurrences
                    )
                )
            return
        raise ApiUnavailable(f"gave up on {key!r} after {MAX_ATTEMPTS} write conflicts")

    async def _get(self, name: str) -> dict[str, Any] | None:
        return await self._call(self._incidents.get(name))

    async def _create(
        self, name: str, alarm: ReceivedAlarm, group: Group | None
    ) -> dict[str, Any] | None:
        try:
            return await self._call(self._incidents.create(incident_object(name, alarm, group)))
        except ApiError as error:
            if error.status == 409:
                return None
            if error.status == 422:
                raise InvalidAlarm(f"the API server refused the incident: {error.body}") from error
            raise

    def _recall(self, name: str) -> dict[str, Any] | None:
        return self._last.get(name)

    def _remember(self, name: str, incident: dict[str, Any]) -> None:
        self._last[name] = incident
        self._last.move_to_end(name)
        if len(self._last) > OBJECTS_KEPT:
            self._last.popitem(last=False)

    def _forget(self, name: str) -> None:
        self._last.pop(name, None)

    @staticmethod
    async def _call(request: Awaitable[T]) -> T:
        """The request's answer; ApiUnavailable when there is none to act on."""
        try:
            return await request
        except ApiError as error:
            if error.status == 429 or error.status >= 500:
                raise ApiUnavailable(f"API server answered {error.status}") from error
            raise  # a 409, 404 or 422 is the caller's to act on; any other, a bug
        except TRANSPORT_ERRORS as error:
            raise ApiUnavailable(
                f"API server unreachable: {type(error).__name__}: {error}"
            ) from error


def incident_object(name: str, alarm: ReceivedAlarm, group: Group | None = None) -> dict[str, Any]:
    """The Incident that a first delivery of `alarm` creates (the first of `group`'s)."""
    labels = {
        "app.kubernetes.io/managed-by": "incident-operator",
        f"{GROUP}/source": alarm.source,
        f"{GROUP}/severity": alarm.severity,
        f"{GROUP}/service": label_value(service_name(alarm.service)),
        f"{GROUP}/fingerprint": fingerprint_hash(alarm.fingerprint),
    }
    if group is not None:
        labels[f"{GROUP}/group"] = group.hash
    return {
        "apiVersion": API_VERSION,
        "kind": "Incident",
        "metadata": {
            "name": name,
            "annotations": ({FIRST_DELIVERY: alarm.delivery_id} if alarm.delivery_id else {}),
            "labels": labels,
        },
        "spec": alarm.incident_spec().to_api(),
    }


def _key(alarm: ReceivedAlarm, group: Group | None) -> str:
    """What deliveries are batched and Incidents named by: the group, or the alarm."""
    return f"group:{group.key}" if group is not None else alarm.fingerprint


def _after_window(
    incident: dict[str, Any], alarms: list[ReceivedAlarm], group: Group
) -> list[ReceivedAlarm]:
    """The alarms that do not join this open Incident of their group: not
    among its alerts, and arriving after its window (or recovering: a
    recovery of an alert it does not hold is not its)."""
    present = {alert["fingerprint"] for alert in alerts_of(incident)}
    created = _parse_time(incident["metadata"]["creationTimestamp"])
    open_to_new = (datetime.now(UTC) - created).total_seconds() < group.window_seconds
    return [
        alarm
        for alarm in alarms
        if alarm.fingerprint not in present and not (open_to_new and alarm.alarm.state == "ALARM")
    ]


def _alert(alarm: ReceivedAlarm, now: str) -> dict[str, Any]:
    return {
        "fingerprint": alarm.fingerprint,
        "title": alarm.title,
        "severity": alarm.severity,
        "service": alarm.service.name,
        "state": alarm.alarm.state,
        "occurrences": 1,
        "firstSeen": now,
        "lastSeen": now,
    }


def incident_state(alerts: list[dict[str, Any]], latest: str, resolve_when: str) -> str:
    """The Incident's alarm state from its alerts' ("any": a recovery of any is OK)."""
    if resolve_when == "any" and latest == "OK":
        return "OK"
    states = {str(alert["state"]) for alert in alerts}
    if len(states) == 1:
        return states.pop()
    return "ALARM" if "ALARM" in states else "INSUFFICIENT_DATA"


def _not_seen_before(alarms: list[ReceivedAlarm], seen: list[str]) -> list[ReceivedAlarm]:
    """The deliveries not counted before: a repeated delivery id counts once."""
    known = set(seen)
    fresh = []
    for alarm in alarms:
        if alarm.delivery_id is not None:
            if alarm.delivery_id in known:
                continue
            known.add(alarm.delivery_id)
        fresh.append(alarm)
    return fresh


def _count(status: dict[str, Any]) -> int:
    # An Incident that exists has fired at least once: its creation.
    return int(status.get("occurrences") or 1)


def _delivery_ids(incident: dict[str, Any]) -> list[str]:
    """Delivery ids already counted: the status's, or the creating delivery's."""
    status = incident.get("status") or {}
    if status.get("deliveryIds"):
        return list(status["deliveryIds"])
    first = (incident["metadata"].get("annotations") or {}).get(FIRST_DELIVERY)
    return [first] if first else []


def _status_patch(
    incident: dict[str, Any],
    alarms: list[ReceivedAlarm],
    fresh: list[ReceivedAlarm],
    seen: list[str],
    *,
    created: bool,
    resolve_when: str,
) -> dict[str, Any] | None:
    """The status patch for these deliveries (all in one state), or None: nothing to write.

    Fresh deliveries count, on the Incident and on their alert (a new alert
    is added); any firing delivery moves lastSeen (but the one that just
    created the Incident: the operator's first write records it); a group's
    truncation, when it changed, is noted.
    """
    status = incident.get("status") or {}
    now = datetime.now(UTC)
    stamp = now.isoformat()
    latest = alarms[-1]
    state = latest.alarm.state
    update: dict[str, Any] = {}
    alerts = alerts_of(incident)
    by_fingerprint = {alert["fingerprint"]: alert for alert in alerts}
    count = int(status.get("alertCount") or len(alerts))
    if fresh:
        new_ids = [alarm.delivery_id for alarm in fresh if alarm.delivery_id is not None]
        if new_ids:
            update["deliveryIds"] = [*seen, *new_ids][-DELIVERY_IDS_KEPT:]
        if state == "ALARM":
            update["occurrences"] = _count(status) + len(fresh)
            if not status.get("firstSeen"):
                update["firstSeen"] = incident["metadata"]["creationTimestamp"]
        for alarm in fresh:
            alert = by_fingerprint.get(alarm.fingerprint)
            if alert is None:
                if state != "ALARM":
                    continue  # a recovery of an alert this Incident never held
                count += 1  # beyond the list's bound an alert is counted, not listed
                if len(alerts) < MAX_ALERTS:
                    alert = by_fingerprint[alarm.fingerprint] = _alert(alarm, stamp)
                    alerts.append(alert)
                continue
            if state == "ALARM":
                alert["occurrences"] = int(alert["occurrences"]) + 1
                alert["lastSeen"] = stamp
            alert["state"] = state
        update["alarmState"] = incident_state(alerts, state, resolve_when)
        update["alerts"] = alerts
        update["alertCount"] = count
    if state == "ALARM" and (fresh or (not created and _seen_before(status.get("lastSeen"), now))):
        update["lastSeen"] = now
        for alarm in alarms:
            if alarm.fingerprint in by_fingerprint:
                by_fingerprint[alarm.fingerprint]["lastSeen"] = stamp
        update["alerts"] = alerts
    truncated = latest.group_truncated
    if truncated is not None and truncated != (status.get("truncatedAlerts") or 0):
        update["truncatedAlerts"] = truncated or None  # 0: the note goes
    if not update:
        return None
    # Validate against the model (bounds, enums) before it goes out.
    validated = IncidentStatus.model_validate(update)
    return {"status": validated.model_dump(mode="json", by_alias=True, include=_fields(update))}


def _seen_before(last_seen: str | None, now: datetime) -> bool:
    """Whether a recorded lastSeen is older than the resolution (or missing)."""
    if not last_seen:
        return True
    return (now - _parse_time(last_seen)).total_seconds() > LAST_SEEN_RESOLUTION_SECONDS


def _parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _fields(update: dict[str, Any]) -> set[str]:
    by_alias = {(info.alias or name): name for name, info in IncidentStatus.model_fields.items()}
    return {by_alias[key] for key in update}
