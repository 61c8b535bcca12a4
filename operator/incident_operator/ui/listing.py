"""The Incident list: its rows (kubectl's columns plus durations) and its filters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import get_args

from ..models import Incident, Phase, Severity
from . import times

PHASES: tuple[str, ...] = get_args(Phase)
SEVERITIES: tuple[str, ...] = get_args(Severity)
# The time filter's choices: label -> how far back.
SINCE: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
# Rows rendered at most; the rest are counted ("narrow the filters").
MAX_ROWS = 200


@dataclass(frozen=True)
class Row:
    """One Incident as the list shows it: `kubectl get incidents` plus durations."""

    namespace: str
    name: str
    service: str
    severity: str
    phase: str
    decision: str
    action: str
    outcome: str
    acked_by: str
    alerts: int
    count: int
    title: str
    opened: datetime | None
    age: float | None
    to_acknowledge: float | None
    to_resolve: float | None
    open_for: float | None


def row(incident: Incident, now: datetime) -> Row:
    status = incident.status
    assessment = status.assessment
    outcome = next((c.reason for c in status.conditions if c.type == "Remediated"), "")
    return Row(
        namespace=str(incident.metadata.get("namespace", "")),
        name=str(incident.metadata.get("name", "")),
        service=incident.spec.service.name,
        severity=incident.severity,
        phase=status.phase or "",
        decision=assessment.decision if assessment else "",
        action=assessment.action if assessment else "",
        outcome=outcome,
        acked_by=status.acknowledgement.by if status.acknowledgement else "",
        alerts=status.alert_count or max(1, len(status.alerts)),
        count=status.occurrences,
        title=incident.spec.title,
        opened=times.opened(incident),
        # kubectl's AGE is the object's; the first alarm is when it was made.
        age=times.seconds_between(times.opened(incident), now),
        to_acknowledge=times.time_to_acknowledge(incident),
        to_resolve=times.time_to_resolve(incident),
        open_for=times.open_for(incident, now),
    )


@dataclass(frozen=True)
class Filters:
    """What the list is narrowed to; every given criterion must hold."""

    phase: str = ""
    service: str = ""
    severity: str = ""
    since: str = ""
    text: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        """From the page's query string; values outside the choices are ignored."""
        phase = query.get("phase", "")
        severity = query.get("severity", "")
        since = query.get("since", "")
        return cls(
            phase=phase if phase in PHASES else "",
            service=query.get("service", "").strip()[:256],
            severity=severity if severity in SEVERITIES else "",
            since=since if since in SINCE else "",
            text=query.get("q", "").strip()[:256],
        )

    def matches(self, incident: Incident, now: datetime) -> bool:
        if self.phase and incident.status.phase != self.phase:
            return False
        if self.severity and incident.severity != self.severity:
            return False
        if self.service and self.service.lower() not in incident.spec.service.name.lower():
            return False
        if self.since:
            began = times.opened(incident)
            if began is None or began < now - SINCE[self.since]:
                return False
        return not self.text or self.text.lower() in _searchable(incident)


def _searchable(incident: Incident) -> str:
    """The text free-text search looks in, lower-cased."""
    spec, status = incident.spec, incident.status
    parts = [
        str(incident.metadata.get("name", "")),
        spec.title,
        spec.summary,
        spec.service.name,
        spec.alarm.name,
        spec.alarm.reason or "",
        spec.fingerprint,
        status.message or "",
        status.assessment.message if status.assessment else "",
        *(alert.title for alert in status.alerts),
        *spec.labels.values(),
    ]
    return "\n".join(parts).lower()


@dataclass(frozen=True)
class Listing:
    rows: list[Row]
    matched: int
    total: int


def listing(incidents: Iterable[Incident], filters: Filters, now: datetime) -> Listing:
    """The rows that match, newest first, at most MAX_ROWS of them."""
    everything = list(incidents)
    matched = [i for i in everything if filters.matches(i, now)]
    matched.sort(key=lambda i: times.opened(i) or now, reverse=True)
    return Listing(
        rows=[row(i, now) for i in matched[:MAX_ROWS]],
        matched=len(matched),
        total=len(everything),
    )


def services(incidents: Iterable[Incident]) -> list[str]:
    """Every service named, for the filter's suggestions."""
    return sorted({incident.spec.service.name for incident in incidents})
