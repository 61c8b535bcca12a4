"""Which alarms share an Incident: a ResponsePolicy's `grouping`.

A policy that groups names alarm attributes (`by`); alarms its match
selects and that agree on those attributes have one group key. The first
alarm of a key opens an Incident; the others arriving within `window` of its
creation join it as more alerts (`status.alerts`), so a storm is one
Incident: one assessment, one conversation, at most one action.

The Incident's name is made from the key alone (see `ingest/names.py`), so
every webhook replica aims the alarms of one group at the same object, and
the API server's create (one wins, 409 for the others) and
resourceVersion-checked patches keep the group exact under concurrency.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .models import IncidentSpec, seconds
from .policy import Policy, attribute, select


@dataclass(frozen=True)
class Group:
    """An alarm's group: the key its Incident is named after, and the rules."""

    key: str  # "<policy>/<attribute>=<value>,...": equal for the alarms of a group
    values: tuple[str, ...]  # the attributes' values, for a readable name
    window_seconds: int
    resolve_when: str  # "all" | "any"

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()[:12]


def group_of(policies: Iterable[Policy], spec: IncidentSpec) -> Group | None:
    """The group of an alarm under the policy that applies to it; None: not grouped."""
    policy = select(policies, spec)
    grouping = policy.spec.grouping
    if grouping is None:
        return None
    values = tuple(attribute(spec, name) for name in grouping.by)
    pairs = ",".join(f"{name}={value}" for name, value in zip(grouping.by, values, strict=True))
    return Group(
        key=f"{policy.name}/{pairs}",
        values=values,
        window_seconds=seconds(grouping.window),
        resolve_when=grouping.resolve_when,
    )


def alerts_of(incident: dict[str, Any]) -> list[dict[str, Any]]:
    """The Incident's alerts as stored; for one nobody counted yet (or written
    before Incidents held alerts), its one alert, made from its spec and counts."""
    status = incident.get("status") or {}
    if status.get("alerts"):
        return [dict(alert) for alert in status["alerts"]]
    spec = incident["spec"]
    created = incident["metadata"]["creationTimestamp"]
    return [
        {
            "fingerprint": spec["fingerprint"],
            "title": spec["title"],
            "severity": spec.get("severity", "medium"),
            "service": spec["service"]["name"],
            "state": status.get("alarmState") or spec["alarm"].get("state", "ALARM"),
            "occurrences": int(status.get("occurrences") or 1),
            "firstSeen": status.get("firstSeen") or created,
            "lastSeen": status.get("lastSeen") or created,
        }
    ]
