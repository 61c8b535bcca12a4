"""Evidence: what an engineer on call would look at before deciding.

Read-only collectors (one module each in `collectors/`, found by
`registry.py` the way action plugins are) look at the Incident's service:
its ECS deployments and events, the alarm's metric over the last hour, its
logs, its Kubernetes rollout, and earlier Incidents of the same alarm.
`gather.gather` runs them once per assessment, together, within the
policy's budget: a collector that fails or runs out of time is recorded as
such and the assessment goes on without it.

What they find is untrusted text like the alarm itself (a log line, an
event message, an earlier Incident's title are written by others): the
assessors get it as data, Gemini between the same markers as the alarm,
never as instructions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from ..models import MAX_EVIDENCE_ITEMS, MAX_EVIDENCE_LINE, Evidence, EvidenceItem
from ..text import visible

if TYPE_CHECKING:
    from .asking import Asker

Status = Literal["ok", "failed", "timedOut", "skipped"]


class Skip(Exception):
    """A collector does not apply to this Incident; the message says why."""


@dataclass(frozen=True)
class Found:
    """What one collector saw: a line for people, data for the assessor, facts for the rules."""

    summary: str
    # Quoted to the assessor as JSON; each collector keeps it small (a few
    # KiB at most, `gather` refuses more).
    data: Mapping[str, Any] = field(default_factory=dict)
    # When the service's latest deployment started (ECS, Kubernetes).
    deployed_at: datetime | None = None
    # When earlier Incidents of the same service and alarm were created.
    earlier: tuple[datetime, ...] | None = None


@dataclass(frozen=True)
class Finding:
    """A collector's outcome, whatever it was."""

    collector: str
    status: Status
    summary: str
    elapsed_ms: int
    found: Found | None = None

    def item(self) -> EvidenceItem:
        return EvidenceItem(
            collector=self.collector,
            status=self.status,
            summary=line(self.summary),
            elapsed_ms=self.elapsed_ms,
        )

    def quoted(self) -> dict[str, Any]:
        """What the assessor sees of it (as data)."""
        shown: dict[str, Any] = {"collector": self.collector, "status": self.status}
        shown["summary"] = self.summary
        if self.found is not None and self.found.data:
            shown["data"] = dict(self.found.data)
        return shown


def line(text: str, limit: int = MAX_EVIDENCE_LINE) -> str:
    """One visible line of at most `limit` characters."""
    one = " ".join(visible(text).split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


@dataclass(frozen=True)
class Gathered:
    """All the evidence of one assessment."""

    findings: tuple[Finding, ...]
    gathered_at: datetime
    elapsed_ms: int
    budget_ms: int
    # What the assessor may still ask for itself (function calling); None: nothing.
    more: Asker | None = None

    @property
    def everything(self) -> tuple[Finding, ...]:
        """What was gathered, then what the assessor asked for."""
        return self.findings + tuple(self.more.asked if self.more else ())

    @property
    def deployed_at(self) -> datetime | None:
        times = [f.found.deployed_at for f in self.everything if f.found and f.found.deployed_at]
        return max(times, default=None)

    def recurrences(self, within: timedelta | None = None) -> int | None:
        """Earlier Incidents of the same service and alarm (within `within` of
        now, if given); None when nobody looked (history off, or failed).
        From what was gathered only: a history the model asked for again
        (another window) would count the same Incidents twice."""
        earlier = [
            when
            for f in self.findings
            if f.found is not None and f.found.earlier is not None
            for when in f.found.earlier
        ]
        looked = any(f.found is not None and f.found.earlier is not None for f in self.findings)
        if not looked:
            return None
        if within is None:
            return len(earlier)
        return sum(1 for when in earlier if self.gathered_at - when <= within)

    def status(self) -> Evidence:
        """The compact summary kept in `status.assessment.evidence`."""
        return Evidence(
            gathered_at=self.gathered_at,
            elapsed_ms=self.elapsed_ms,
            budget_ms=self.budget_ms,
            items=[f.item() for f in self.everything[:MAX_EVIDENCE_ITEMS]],
            deployed_at=self.deployed_at,
            recurrences=self.recurrences(),
        )

    def quoted(self) -> list[dict[str, Any]]:
        """For the prompt: what each collector found, skipped ones left out."""
        return [f.quoted() for f in self.everything if f.status != "skipped"]


# What a notification shows of the evidence: a short field, not the findings.
MAX_SHOWN = 300


def shown(evidence: Evidence, *, limit: int = MAX_SHOWN) -> str:
    """The evidence in one short line: what the collectors saw, and which could not look."""
    seen = [item.summary for item in evidence.items if item.status == "ok" and item.summary]
    missing = [
        f"{item.collector} {'timed out' if item.status == 'timedOut' else 'failed'}"
        for item in evidence.items
        if item.status in ("failed", "timedOut")
    ]
    return line(" · ".join([*seen, *missing]) or "nothing found", limit)
