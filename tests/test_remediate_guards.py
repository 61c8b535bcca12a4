"""The restart claims' rules, held by both guards: the same tests for each.

`MemoryGuard` keeps claims in this process; `DynamoGuard` in the timeline
table (moto in server mode). Whatever a guard is, an Incident restarts once,
and a target restarts no more often than its cooldown and hourly cap allow.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from aws_fixtures import Aws
from incident_operator.models import RemediationPolicy
from incident_operator.remediate import ActionRefused
from incident_operator.remediate.claims import Claim, ClaimGuard, new_claim, taken_over
from incident_operator.remediate.dynamo_guard import DynamoGuard
from incident_operator.remediate.memory_guard import MemoryGuard

NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TARGET = "us-east-1/demo/checkout"
LIMITS = RemediationPolicy(cooldownSeconds=900, maxPerHour=3)


@pytest.fixture(params=["memory", "dynamodb"])
def guard(request: pytest.FixtureRequest) -> ClaimGuard:
    if request.param == "memory":
        return MemoryGuard()
    aws: Aws = request.getfixturevalue("aws")
    return DynamoGuard(client=aws.client("dynamodb"), table=aws.timeline_table())


def claim(
    incident: str, at: datetime = NOON, *, owner: str | None = None, target: str = TARGET
) -> Claim:
    return new_claim(
        incident_id=incident,
        action="restart_service",
        target=target,
        owner=owner or f"owner-of-{incident}",
        before="ecs-svc/1",
        now=at,
    )


async def test_an_incident_is_claimed_once(guard: ClaimGuard) -> None:
    first = await guard.claim(claim("ns/a"), limits=LIMITS)
    again = await guard.claim(claim("ns/a", owner="a-retry"), limits=LIMITS)

    assert again.claimed_by == first.claimed_by == "owner-of-ns/a"
    assert await guard.read("ns/a") == first


async def test_a_target_is_not_restarted_within_its_cooldown(guard: ClaimGuard) -> None:
    await guard.claim(claim("ns/a"), limits=LIMITS)

    with pytest.raises(ActionRefused) as refused:
        await guard.claim(claim("ns/b", NOON + timedelta(seconds=899)), limits=LIMITS)
    assert refused.value.reason == "Cooldown"
    assert "ns/a" in str(refused.value)  # who restarted it last

    later = await guard.claim(claim("ns/c", NOON + timedelta(seconds=901)), limits=LIMITS)
    assert later.incident_id == "ns/c"
    # Another target is not held back by this one's cooldown.
    other = claim("ns/d", NOON + timedelta(seconds=1), target="us-east-1/demo/search")
    assert (await guard.claim(other, limits=LIMITS)).incident_id == "ns/d"


async def test_a_target_is_restarted_at_most_its_cap_per_clock_hour(guard: ClaimGuard) -> None:
    no_cooldown = RemediationPolicy(cooldownSeconds=0, maxPerHour=2)
    await guard.claim(claim("ns/a", NOON), limits=no_cooldown)
    await guard.claim(claim("ns/b", NOON + timedelta(minutes=10)), limits=no_cooldown)

    with pytest.raises(ActionRefused) as refused:
        await guard.claim(claim("ns/c", NOON + timedelta(minutes=59)), limits=no_cooldown)
    assert refused.value.reason == "HourlyCap"
    assert "13:00:00Z" in str(refused.value)  # when the next one is allowed

    next_hour = await guard.claim(claim("ns/d", NOON + timedelta(hours=1)), limits=no_cooldown)
    assert next_hour.incident_id == "ns/d"


async def test_a_cap_of_zero_allows_no_restart(guard: ClaimGuard) -> None:
    with pytest.raises(ActionRefused, match="maxPerHour: 0"):
        await guard.claim(claim("ns/a"), limits=RemediationPolicy(maxPerHour=0))
    assert await guard.read("ns/a") is None


async def test_when_both_limits_forbid_the_longer_one_is_reported(guard: ClaimGuard) -> None:
    # The cap frees at 13:00; a cooldown of two hours lasts longer.
    tight = RemediationPolicy(cooldownSeconds=7200, maxPerHour=1)
    await guard.claim(claim("ns/a"), limits=tight)
    with pytest.raises(ActionRefused) as refused:
        await guard.claim(claim("ns/b", NOON + timedelta(minutes=5)), limits=tight)
    assert refused.value.reason == "Cooldown"


async def test_an_abandoned_claim_is_taken_over_by_one_attempt_only(
    guard: ClaimGuard,
) -> None:
    dead = await guard.claim(claim("ns/a"), limits=LIMITS)
    later = NOON + timedelta(minutes=1)
    mine = taken_over(dead, owner="recoverer", before="ecs-svc/1", now=later)
    theirs = taken_over(dead, owner="rival", before="ecs-svc/1", now=later)

    assert await guard.take_over(dead, mine, limits=LIMITS) == mine
    assert await guard.take_over(dead, theirs, limits=LIMITS) is None
    stored = await guard.read("ns/a")
    assert stored is not None and stored.claimed_by == "recoverer"


async def test_a_completed_claim_keeps_its_first_deployment(guard: ClaimGuard) -> None:
    held = await guard.claim(claim("ns/a"), limits=LIMITS)
    first = await guard.complete(held, receipt="ecs-svc/2", acted_at=NOON)
    second = await guard.complete(held, receipt="ecs-svc/3", acted_at=NOON)

    assert first.receipt == second.receipt == "ecs-svc/2"
    # A restart that happened is never taken over.
    later = taken_over(held, owner="late", before="x", now=NOON)
    assert await guard.take_over(held, later, limits=LIMITS) is None


async def test_a_released_claim_holds_nobody_back(guard: ClaimGuard) -> None:
    capped = RemediationPolicy(cooldownSeconds=900, maxPerHour=1)
    held = await guard.claim(claim("ns/a"), limits=capped)
    await guard.release(held)

    assert await guard.read("ns/a") is None
    # Neither the cooldown nor the hour's count kept the released attempt.
    after = await guard.claim(claim("ns/b", NOON + timedelta(seconds=1)), limits=capped)
    assert after.incident_id == "ns/b"


async def test_a_completed_claim_is_not_released(guard: ClaimGuard) -> None:
    held = await guard.claim(claim("ns/a"), limits=LIMITS)
    done = await guard.complete(held, receipt="ecs-svc/2", acted_at=NOON)
    await guard.release(held)

    assert await guard.read("ns/a") == done
    with pytest.raises(ActionRefused):
        await guard.claim(claim("ns/b", NOON + timedelta(seconds=1)), limits=LIMITS)


async def test_an_empty_marker_is_kept_as_one(guard: ClaimGuard) -> None:
    # A Deployment never restarted has no restartedAt: its marker is "", and
    # reading the claim back must not turn that into "nothing was observed".
    fresh = replace(claim("ns/a"), before="")
    await guard.claim(fresh, limits=LIMITS)

    stored = await guard.read("ns/a")

    assert stored is not None and stored.before == ""
