"""The timeline: one entry per thing that happened to an Incident.

Stored in DynamoDB (TIMELINE_TABLE; partition key `incident_id`, sort key
`ts`, compatible with the serverless agent). Writes are idempotent: an
entry's key is decided before it is written, and a conditional put makes a
retry a no-op, so retries never duplicate.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field


class Entry(BaseModel):
    incident_id: str = Field(description="namespace/name of the Incident")
    ts: str = Field(description="Sort key: ISO-8601 time, then '#' and a unique suffix")
    kind: str = Field(description="received, occurrence, assessment, approval, action_started...")
    message: str
    phase: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Timeline(Protocol):
    async def record(self, entries: list[Entry]) -> None:
        """Write entries; an entry already there (same incident_id and ts) is left alone."""
        ...

    async def read(self, incident_id: str) -> list[Entry]:
        """All entries of one Incident, oldest first."""
        ...

    async def has(self, entry: Entry) -> bool:
        """Whether an entry with this entry's key (incident_id, ts) is stored."""
        ...
