"""An Incident's story: its DynamoDB timeline and its Kubernetes Events, in one order.

The operator writes each thing that happens twice, as a timeline entry and
as an Event: where the two say the same within a minute, the story tells it
once, marked as both. Timeline entries older than the Incident (its first
alarm) belong to an earlier Incident of the same name (retention deleted
it, the alarm came back): they are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..timeline import Entry
from .times import parse_time

SAME_WITHIN = timedelta(seconds=60)
# Clocks of the writers and the API server differ a little.
CREATION_SLACK = timedelta(seconds=60)


@dataclass
class Chapter:
    at: datetime | None
    what: str  # timeline kind, or Event reason
    phase: str
    message: str
    sources: list[str]  # "timeline", "event"
    warning: bool = False
    count: int = 1


def tell(
    *, entries: Iterable[Entry], events: Iterable[dict[str, Any]], created: datetime | None
) -> list[Chapter]:
    chapters = [
        Chapter(
            at=parse_time(entry.ts.split("#", 1)[0]),
            what=entry.kind,
            phase=entry.phase or "",
            message=entry.message,
            sources=["timeline"],
        )
        for entry in entries
    ]
    if created is not None:
        chapters = [c for c in chapters if c.at is None or c.at >= created - CREATION_SLACK]
    for event in events:
        at = parse_time(
            event.get("eventTime") or event.get("lastTimestamp") or event.get("firstTimestamp")
        )
        if at is None:
            at = parse_time((event.get("metadata") or {}).get("creationTimestamp"))
        message = str(event.get("message") or "")
        told = next((c for c in chapters if _same(c, message, at)), None)
        if told is not None:
            told.sources.append("event")
            told.warning = told.warning or event.get("type") == "Warning"
            continue
        chapters.append(
            Chapter(
                at=at,
                what=str(event.get("reason") or ""),
                phase="",
                message=message,
                sources=["event"],
                warning=event.get("type") == "Warning",
                count=int(event.get("count") or 1),
            )
        )
    # Stable: entries written in one transition keep their written order.
    chapters.sort(key=lambda c: (c.at is None, c.at.timestamp() if c.at else 0.0))
    return chapters


def _same(chapter: Chapter, message: str, at: datetime | None) -> bool:
    if "event" in chapter.sources or chapter.message != message:
        return False
    if chapter.at is None or at is None:
        return True
    return abs(chapter.at - at) <= SAME_WITHIN
