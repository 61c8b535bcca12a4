"""Action claims and their rules: one action per Incident, a cooldown and
an hourly cap per target.

A claim is an Incident's right to its one action, and what became of it.
Claiming checks, atomically and in this order: that the Incident has no
claim yet (a retry of the same Incident is not a cooldown violation), that
the target's last action is older than the cooldown, and that its hour is
below the cap. The cooldown and the cap count every action on a target
together: a scale and a restart of one service are two actions on it. The
hourly cap counts fixed UTC clock hours (11:00-12:00), not a sliding 60
minutes: simple to store and to explain, at the price of allowing up to
twice the cap across an hour boundary; the cooldown bounds bursts within
that. The target is the canonical `region/cluster/service` (see target.py):
an ARN and a name of one service share one cooldown and one cap.

A claim records what the action's plugin observed of the target just before
acting (`before`: for an ECS restart, the PRIMARY deployment), and its
receipt once acting returned (the new deployment). A claim without a
receipt means its process stopped in between; the executor asks the plugin
whether the target moved on from `before` to tell "done, not yet written
down" from "never done" (see executor.py).

Time comes from this host's clock: replicas with skewed clocks see the
cooldown shifted by the skew.

Two guards keep claims: `DynamoGuard` (dynamo_guard.py), in the timeline
table, across processes, replicas and crashes; `MemoryGuard`
(memory_guard.py), in one process, for when no table is configured. Both
pass the same tests (tests/test_remediate_guards.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ..models import RemediationPolicy
from . import ActionRefused


def hour_key(now: datetime) -> str:
    return "hour#" + now.astimezone(UTC).strftime("%Y-%m-%dT%H")


@dataclass(frozen=True)
class Claim:
    """An Incident's right to its one action, and what became of it."""

    incident_id: str
    action: str
    target: str  # region/cluster/service, canonical
    claimed_by: str  # a token per attempt, for compare-and-swap
    claimed_at: datetime
    cooldown_stamp: float  # the target's last-action stamp this claim wrote
    hour: str  # the hour bucket it was counted in
    before: str | None = None  # the plugin's marker of the target before acting
    receipt: str | None = None  # what acting produced
    acted_at: datetime | None = None


def new_claim(
    *, incident_id: str, action: str, target: str, owner: str, before: str, now: datetime
) -> Claim:
    return Claim(
        incident_id=incident_id,
        action=action,
        target=target,
        claimed_by=owner,
        claimed_at=now,
        cooldown_stamp=epoch(now),
        hour=hour_key(now),
        before=before,
    )


def taken_over(claim: Claim, *, owner: str, before: str, now: datetime) -> Claim:
    """The claim as a new attempt holds it; it stays counted in its first hour."""
    return replace(
        claim,
        claimed_by=owner,
        claimed_at=now,
        cooldown_stamp=epoch(now),
        before=before,
    )


class ClaimGuard(Protocol):
    async def read(self, incident_id: str) -> Claim | None: ...

    async def claim(self, claim: Claim, *, limits: RemediationPolicy) -> Claim:
        """Store a new claim (see `new_claim`), or raise ActionRefused.

        If the Incident was claimed before, returns that claim unchanged
        (its `claimed_by` is not the new claim's).
        """
        ...

    async def take_over(
        self, claim: Claim, taken: Claim, *, limits: RemediationPolicy
    ) -> Claim | None:
        """Replace an abandoned claim (no receipt recorded) by `taken` (see `taken_over`).

        The cooldown is checked again (the claim's own stamp does not count),
        since much may have happened since the claim was made. None: someone
        else changed the claim first.
        """
        ...

    async def complete(self, claim: Claim, *, receipt: str, acted_at: datetime) -> Claim:
        """Record the action's receipt; returns the claim as stored (first writer wins)."""
        ...

    async def release(self, claim: Claim) -> None:
        """Undo a claim whose action certainly did not happen, so others may act."""
        ...


# --- refusals -------------------------------------------------------------


def cooldown_refusal(
    *, target: str, limits: RemediationPolicy, last_at: float, last_incident: str | None
) -> tuple[datetime, ActionRefused]:
    last = datetime.fromtimestamp(last_at, UTC)
    allowed = last + timedelta(seconds=limits.cooldown_seconds)
    by = f" for incident {last_incident}" if last_incident else ""
    return allowed, ActionRefused(
        "Cooldown",
        f"{target} was last acted on at {iso(last)}{by}; the cooldown of "
        f"{limits.cooldown_seconds}s allows the next action at {iso(allowed)}.",
    )


def cap_refusal(
    *, target: str, limits: RemediationPolicy, now: datetime
) -> tuple[datetime, ActionRefused]:
    start = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    allowed = start + timedelta(hours=1)
    if limits.max_per_hour == 0:
        return allowed, ActionRefused(
            "HourlyCap", f"The policy allows no automatic actions on {target} (maxPerHour: 0)."
        )
    return allowed, ActionRefused(
        "HourlyCap",
        f"{target} was already acted on {limits.max_per_hour} times in the hour from "
        f"{iso(start)} (cap {limits.max_per_hour} per clock hour, UTC); "
        f"the next action is allowed at {iso(allowed)}.",
    )


def latest(*refusals: tuple[datetime, ActionRefused] | None) -> ActionRefused:
    """When several limits forbid an action, report the one that lasts longest."""
    found = [refusal for refusal in refusals if refusal is not None]
    return max(found, key=lambda refusal: refusal[0])[1]


def epoch(moment: datetime) -> float:
    return round(moment.timestamp(), 3)


def iso(moment: datetime, *, precise: bool = False) -> str:
    spec = "milliseconds" if precise else "seconds"
    return moment.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")
