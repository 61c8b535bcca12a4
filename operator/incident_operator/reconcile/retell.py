"""Tell the notification channels of a transition, and tell again what failed.

A transition is announced before it is written, and what the channels
report (a Slack message's ts, a Jira key, the Notified condition) goes into
that same write. When a channel could not be told (down, throttled, its
breaker open), the Notified condition says so, and the channels are asked
again later: after `retell_after` seconds, then twice that and so on,
RETELL_ATTEMPTS times. So is a transition whose event still waits in a
channel's paced lane (Notified Unknown). Channels find what they already did (a Slack message
by its metadata, a Jira issue by its label, an email by its claim), so the
ones that had succeeded do nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from kubernetes import client

from ..kube import patch_status_if_unchanged
from ..models import Incident, IncidentStatus, LastTransition
from ..notify import Notifier
from ..policy import Policy
from .conditions import get_condition, set_condition
from .phases import Transition

log = logging.getLogger(__name__)

# A transition a channel could not be told of is told again this many times,
# after the retell delay, doubling each time.
RETELL_ATTEMPTS = 5


@dataclass(slots=True)
class _Retells:
    """Retells of one transition's failed announcement."""

    transition: datetime  # its lastTransition.at
    made: int
    next_at: float  # event loop time


class Announcer:
    """Tells the channels of each transition (`announce`), and again (`retell`)."""

    def __init__(
        self,
        *,
        objects: client.CustomObjectsApi,
        notifier: Notifier,
        clock: Callable[[], datetime],
        retell_after: float,
    ) -> None:
        self._objects = objects
        self._notifier = notifier
        self._clock = clock
        self._retell_after = max(retell_after, 1.0)
        self._retells: dict[str, _Retells] = {}

    def forget(self, uid: str) -> None:
        """The Incident is gone: drop what was kept about it."""
        self._retells.pop(uid, None)

    async def announce(
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

    async def retell(self, incident: Incident, policy: Policy) -> float | None:
        """Tell the channels again of a transition some could not be told of,
        if that is due. Returns the seconds until the next retell, or None
        if none is due."""
        uid = incident.metadata["uid"]
        notified = get_condition(incident.status.conditions, "Notified")
        last = incident.status.last_transition
        if notified is None or notified.status == "True" or last is None:
            self._retells.pop(uid, None)
            return None
        now = asyncio.get_running_loop().time()
        state = self._retells.get(uid)
        if state is None or state.transition != last.at:
            state = self._retells[uid] = _Retells(last.at, 0, now + self._retell_after)
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
        return state.next_at - now if announced.status != "True" else None
