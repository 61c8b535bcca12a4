"""When things happened to an Incident, and how long they took."""

from __future__ import annotations

from datetime import UTC, datetime

from ..models import CLOSED_PHASES, Incident


def parse_time(value: object) -> datetime | None:
    """A Kubernetes timestamp (RFC 3339 text) or a datetime, as an aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def opened(incident: Incident) -> datetime | None:
    """When the Incident began: its first alarm, else when it was created."""
    return incident.status.first_seen or parse_time(incident.metadata.get("creationTimestamp"))


def acknowledged(incident: Incident) -> datetime | None:
    ack = incident.status.acknowledgement
    return ack.at if ack else None


def closed(incident: Incident) -> datetime | None:
    """When it was resolved (or failed): the Resolved condition, else its last transition."""
    status = incident.status
    if status.phase not in CLOSED_PHASES:
        return None
    for condition in status.conditions:
        if condition.type == "Resolved" and condition.status == "True":
            return condition.last_transition_time
    return status.last_transition.at if status.last_transition else None


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def time_to_acknowledge(incident: Incident) -> float | None:
    return seconds_between(opened(incident), acknowledged(incident))


def time_to_resolve(incident: Incident) -> float | None:
    """Seconds from the first alarm to resolution; None unless Resolved."""
    if incident.status.phase != "Resolved":
        return None
    return seconds_between(opened(incident), closed(incident))


def open_for(incident: Incident, now: datetime) -> float | None:
    """How long it has been (or was) open: to its close, else to now."""
    return seconds_between(opened(incident), closed(incident) or now)


def duration(seconds: float | None) -> str:
    """Seconds as people say it: 45s, 3m 12s, 2h 5m, 4d 3h; '' for None."""
    if seconds is None:
        return ""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def stamp(value: datetime | None) -> str:
    """A time in UTC to the second: 2026-11-30 13:15:02Z."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
