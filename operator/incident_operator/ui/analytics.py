"""Analytics over a period: what a team lead reads at the end of the month.

Computed from the Incidents the API server still holds (finished ones are
deleted after their policy's retention, a week by default): the period
can reach no further back than that.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from ..models import Incident
from ..reconcile.phases import QUIET_RESOLUTION
from . import times

PERIODS = (1, 7, 30, 90)
PERCENTILES = (50, 90, 99)
NOISIEST = 10
# Columns of the per-day table: the busiest services, the rest as one.
MAX_SERVICES = 12
OTHERS = "others"


def percentile(values: Sequence[float], p: int) -> float | None:
    """The nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Spread:
    """How a measure is spread: how many, and its percentiles."""

    count: int
    percentiles: dict[int, float | None]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(count=len(values), percentiles={p: percentile(values, p) for p in PERCENTILES})


@dataclass(frozen=True)
class Outcome:
    label: str
    count: int
    share: float  # 0..1


@dataclass(frozen=True)
class Alarm:
    name: str
    incidents: int
    occurrences: int


@dataclass(frozen=True)
class AiCost:
    assessor: str
    assessments: int
    latency_ms: Spread
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Analytics:
    days: int
    start: datetime
    end: datetime
    total: int
    per_day: list[tuple[date, dict[str, int]]]  # every day of the period, oldest first
    services: list[str]
    busiest_day: int
    mtta: Spread
    mttr: Spread
    outcomes: list[Outcome]
    noisiest: list[Alarm]
    ai: list[AiCost]


def outcome(incident: Incident) -> str:
    """The one word a team lead sorts an Incident under."""
    status = incident.status
    remediation = status.remediation
    if remediation is not None and remediation.result == "Succeeded":
        approval = status.approval
        if approval is not None and approval.required and approval.via != "policy":
            return "remediated after approval"
        return "auto-remediated"
    if status.phase == "Escalated":
        return "escalated"
    if status.phase == "Silenced" or status.message == QUIET_RESOLUTION:
        return "silenced"
    if status.phase == "Ignored":
        return "ignored"
    if status.phase == "Failed":
        return "failed"
    if status.phase == "Resolved":
        return "recovered on its own"
    return "open"


OUTCOMES = (
    "auto-remediated",
    "remediated after approval",
    "escalated",
    "silenced",
    "ignored",
    "recovered on its own",
    "failed",
    "open",
)


def analyse(incidents: Iterable[Incident], *, days: int, now: datetime) -> Analytics:
    start = now - timedelta(days=days)
    chosen = [i for i in incidents if (times.opened(i) or now) >= start]
    first_day = start.date()
    busiest = Counter(i.spec.service.name for i in chosen).most_common()
    shown = {name for name, _ in busiest[:MAX_SERVICES]}
    counts: dict[date, Counter[str]] = defaultdict(Counter)
    for incident in chosen:
        began = times.opened(incident) or now
        service = incident.spec.service.name
        counts[began.date()][service if service in shown else OTHERS] += 1
    per_day = [
        (day, dict(counts.get(day, Counter())))
        for day in (first_day + timedelta(days=n) for n in range((now.date() - first_day).days + 1))
    ]
    sorted_outcomes = Counter(outcome(i) for i in chosen)
    total = len(chosen)
    alarms: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for incident in chosen:
        named = [(a.title, a.occurrences) for a in incident.status.alerts] or [
            (incident.spec.alarm.name, max(1, incident.status.occurrences))
        ]
        for name, occurrences in named:
            alarms[name][0] += 1
            alarms[name][1] += occurrences
    noisiest = sorted(
        (Alarm(name, n, occ) for name, (n, occ) in alarms.items()),
        key=lambda a: (-a.occurrences, -a.incidents, a.name),
    )[:NOISIEST]
    return Analytics(
        days=days,
        start=start,
        end=now,
        total=total,
        per_day=per_day,
        services=sorted(shown) + ([OTHERS] if len(busiest) > MAX_SERVICES else []),
        busiest_day=max((sum(c.values()) for _, c in per_day), default=0),
        mtta=Spread.of([s for i in chosen if (s := times.time_to_acknowledge(i)) is not None]),
        mttr=Spread.of([s for i in chosen if (s := times.time_to_resolve(i)) is not None]),
        outcomes=[
            Outcome(label, sorted_outcomes[label], sorted_outcomes[label] / total if total else 0)
            for label in OUTCOMES
        ],
        noisiest=noisiest,
        ai=_ai_costs(chosen),
    )


def _ai_costs(incidents: list[Incident]) -> list[AiCost]:
    by_assessor: dict[str, list[Incident]] = defaultdict(list)
    for incident in incidents:
        if incident.status.assessment is not None:
            by_assessor[incident.status.assessment.assessor].append(incident)
    costs = []
    for assessor, assessed in sorted(by_assessor.items()):
        made = [i.status.assessment for i in assessed if i.status.assessment is not None]
        costs.append(
            AiCost(
                assessor=assessor,
                assessments=len(made),
                latency_ms=Spread.of([a.latency_ms for a in made if a.latency_ms is not None]),
                prompt_tokens=sum(a.prompt_tokens or 0 for a in made),
                output_tokens=sum(a.output_tokens or 0 for a in made),
            )
        )
    return costs
