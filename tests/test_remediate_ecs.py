"""Restarting ECS services: once per Incident, within cooldown and cap, across crashes.

The executor's claim discipline (remediate/executor.py) through its first
plugin, `restart_service`. Against moto in server mode through real boto3
clients. `aws.count("ecs.UpdateService")` counts the restarts actually
requested from ECS by every client in a test.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aws_fixtures import REGION, Aws
from builders import incident
from incident_operator.models import IncidentSpec, RemediationPolicy, ServiceRef
from incident_operator.remediate import (
    ActionCall,
    ActionRefused,
    Receipt,
    RemediationFailed,
    Target,
    resolve,
)
from incident_operator.remediate.claims import new_claim
from incident_operator.remediate.dynamo_guard import DynamoGuard
from incident_operator.remediate.ecs import EcsClients, judge_rollout
from incident_operator.remediate.executor import Executor
from incident_operator.remediate.plugin import Context

CHECKOUT = Target(region=REGION, cluster="demo", service="checkout")
ALARM = IncidentSpec.model_validate(incident()["spec"])  # what the alarm said
LIMITS = RemediationPolicy()  # cooldown 900 s, 3 per hour


class Clock:
    """A settable clock, for the hour boundaries of the cap."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def table(aws: Aws) -> str:
    aws.ecs_service()
    return aws.timeline_table()


class Restarter:
    """An executor that restarts: a fresh process, or another replica."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    async def restart(
        self, *, incident_id: str, target: Target, limits: RemediationPolicy
    ) -> Receipt:
        return await self.executor.execute(call(incident_id, target), limits=limits)

    async def rollout(self, *, target: Target, deployment_id: str) -> str:
        return await self.executor.verify(call("default/a", target), receipt=deployment_id)


def call(incident_id: str, target: Target) -> ActionCall:
    return ActionCall(
        action="restart_service",
        parameters={},
        target=target,
        incident_id=incident_id,
        alarm=ALARM,
        settings={},
    )


@pytest.fixture
def remediator(aws: Aws, table: str) -> Callable[..., Restarter]:
    """A new executor each call: a fresh process, or another replica.

    `guard_table=None`: claims in memory; `ecs=`: another ECS client; `clock=`.
    """

    def make(**overrides: Any) -> Restarter:
        ecs = overrides.get("ecs", aws.client("ecs"))
        guard_table = overrides.get("guard_table", table)
        guard = (
            DynamoGuard(client=aws.client("dynamodb"), table=guard_table) if guard_table else None
        )
        context = Context(ecs=EcsClients(ecs=ecs))
        if "clock" in overrides:
            context = Context(ecs=context.ecs, clock=overrides["clock"])
        return Restarter(Executor(context=context, guard=guard))

    return make


def restarts(aws: Aws) -> int:
    return aws.count("ecs.UpdateService")


# --- once per Incident -------------------------------------------------------


async def test_an_incident_restarts_its_service_once(
    aws: Aws, remediator: Callable[..., Restarter]
) -> None:
    before = aws.primary()

    first = await remediator().restart(incident_id="default/a", target=CHECKOUT, limits=LIMITS)
    # A new process (no memory of the first call) retries the same step.
    again = await remediator().restart(incident_id="default/a", target=CHECKOUT, limits=LIMITS)

    assert not first.reused
    assert again == Receipt(ref=first.ref, started_at=again.started_at, reused=True)
    assert restarts(aws) == 1
    after = aws.primary()
    assert after["id"] == first.ref != before["id"]
    assert after["createdAt"] > before["createdAt"]


async def test_concurrent_calls_for_one_incident_in_one_process_restart_once(
    aws: Aws, remediator: Callable[..., Restarter]
) -> None:
    one = remediator()

    receipts = await asyncio.gather(
        *(one.restart(incident_id="default/a", target=CHECKOUT, limits=LIMITS) for _ in range(5))
    )

    assert restarts(aws) == 1
    assert {r.ref for r in receipts} == {aws.primary()["id"]}
    assert sorted(r.reused for r in receipts) == [False, True, True, True, True]


async def test_every_alias_of_a_service_shares_its_cooldown(
    aws: Aws, remediator: Callable[..., Restarter]
) -> None:
    # ECS accepts the ARN as the service; so does the alarm. Both are one
    # target, so the second Incident meets the first one's cooldown.
    arn = f"arn:aws:ecs:{REGION}:123456789012:service/demo/checkout"
    by_arn = resolve(ServiceRef(name=arn), default_cluster=None, default_region=REGION)
    by_name = resolve(ServiceRef(name="checkout"), default_cluster="demo", default_region=REGION)
    assert by_arn == Target(REGION, "demo", "checkout", account="123456789012")
    one = remediator()

    await one.restart(incident_id="default/a", target=by_arn, limits=LIMITS)
    with pytest.raises(ActionRefused) as refused:
        await one.restart(incident_id="default/b", target=by_name, limits=LIMITS)

    assert refused.value.reason == "Cooldown"
    assert f"{REGION}/demo/checkout was last acted on" in str(refused.value)
    assert restarts(aws) == 1


async def test_a_target_named_in_another_account_is_refused(
    aws: Aws, remediator: Callable[..., Restarter]
) -> None:
    # Our `checkout` is not the one an alarm of account 210987654321 is about.
    theirs = Target(REGION, "demo", "checkout", account="210987654321")

    with pytest.raises(ActionRefused) as refused:
        await remediator().restart(incident_id="default/a", target=theirs, limits=LIMITS)

    assert refused.value.reason == "OtherAccount"
    assert restarts(aws) == 0


# --- crashes -----------------------------------------------------------------


async def claim_then_die(aws: Aws, table: str, incident_id: str) -> None:
    """What a process leaves behind when it dies right after claiming."""
    guard = DynamoGuard(client=aws.client("dynamodb"), table=table)
    claim = new_claim(
        incident_id=incident_id,
        target=str(CHECKOUT),
        owner="the-dead-process",
        action="restart_service",
        before=aws.primary()["id"],
        now=datetime.now(UTC),
    )
    assert await guard.claim(claim, limits=LIMITS) == claim


async def test_dying_after_the_claim_before_the_ecs_call_still_restarts_once(
    aws: Aws, table: str, remediator: Callable[..., Restarter]
) -> None:
    await claim_then_die(aws, table, "default/a")
    assert restarts(aws) == 0

    receipt = await remediator().restart(incident_id="default/a", target=CHECKOUT, limits=LIMITS)
    again = await remediator().restart(incident_id="default/a", target=CHECKOUT, limits=LIMITS)

    assert restarts(aws) == 1
    assert not receipt.reused
    assert again.reused
    assert again.ref == receipt.ref == aws.primary()["id"]


async def test_dying_after_the_ecs_call_adopts_that_restart(
    aws: Aws, table: str, remediator: Callable[..., Restarter]
) -> None:
    await claim_then_die(aws, table, "default/a")
    # The dead process's ECS call went through; writing down its result did not.
    done = aws.client("ecs").update_service(
        cluster="demo", service="checkout", forceNewDeployment=True
    )
    dead_process_deployment = next(
        d["id"] for d in done["service"]["deployments"] if d["status"] == "PRIMARY"
    )

    receipt = await remediator().restart(incident_id="default/a", target=CHECKOUT, limits=LIMITS)

    assert restarts(aws) == 1  # the dead process's; none added
    assert receipt.reused
    assert receipt.ref == dead_process_deployment == aws.primary()["id"]
    claim = await DynamoGuard(client=aws.client("dynamodb"), table=table).read("default/a")
    assert claim is not None and claim.receipt == dead_process_deployment


async def test_two_recoverers_of_one_abandoned_claim_restart_once(
    aws: Aws, table: str, remediator: Callable[..., Restarter]
) -> None:
    await claim_then_die(aws, table, "default/a")
    replicas = [remediator() for _ in range(4)]
    outcomes = run_in_threads(
        [
            lambda r=r: r.restart(incident_id="default/a", target=CHECKOUT, limits=LIMITS)
            for r in replicas
        ]
    )

    assert restarts(aws) == 1
    receipts = [o for o in outcomes if isinstance(o, Receipt)]
    assert {r.ref for r in receipts} == {aws.primary()["id"]}
    # A loser either saw the winner's result or was told to come back later.
    assert all(isinstance(o, Receipt | RemediationFailed) for o in outcomes)


# --- cooldown and hourly cap -------------------------------------------------


async def test_a_second_incident_within_the_cooldown_is_refused(
    aws: Aws, remediator: Callable[..., Restarter]
) -> None:
    clock = Clock(datetime(2026, 11, 29, 11, 0, 0, tzinfo=UTC))
    first = await remediator(clock=clock).restart(
        incident_id="default/a", target=CHECKOUT, limits=LIMITS
    )
    clock.now += timedelta(minutes=5)

    with pytest.raises(ActionRefused) as refused:
        await remediator(clock=clock).restart(
            incident_id="default/b", target=CHECKOUT, limits=LIMITS
        )

    assert refused.value.reason == "Cooldown"
    assert "default/a" in str(refused.value)
    assert "2026-11-29T11:15:00Z" in str(refused.value)  # 11:00 + 900 s
    assert restarts(aws) == 1
    assert aws.primary()["id"] == first.ref

    clock.now += timedelta(minutes=10, seconds=1)
    later = await remediator(clock=clock).restart(
        incident_id="default/b", target=CHECKOUT, limits=LIMITS
    )
    assert not later.reused
    assert restarts(aws) == 2


async def test_concurrent_incidents_for_one_service_restart_it_once(
    aws: Aws, remediator: Callable[..., Restarter]
) -> None:
    # Eight replicas, each with its own clients, each handling another Incident.
    replicas = [remediator() for _ in range(8)]
    outcomes = run_in_threads(
        [
            lambda r=r, n=n: r.restart(incident_id=f"default/i{n}", target=CHECKOUT, limits=LIMITS)
            for n, r in enumerate(replicas)
        ]
    )

    receipts = [o for o in outcomes if isinstance(o, Receipt)]
    refusals = [o for o in outcomes if isinstance(o, ActionRefused)]
    assert len(receipts) == 1, outcomes
    assert [r.reason for r in refusals] == ["Cooldown"] * 7, outcomes
    assert restarts(aws) == 1
    assert aws.primary()["id"] == receipts[0].ref


async def test_the_hourly_cap_counts_fixed_utc_hours(
    aws: Aws, remediator: Callable[..., Restarter]
) -> None:
    limits = RemediationPolicy(cooldown_seconds=0, max_per_hour=2)
    clock = Clock(datetime(2026, 11, 29, 11, 58, 0, tzinfo=UTC))
    one = remediator(clock=clock)
    await one.restart(incident_id="default/a", target=CHECKOUT, limits=limits)
    await one.restart(incident_id="default/b", target=CHECKOUT, limits=limits)

    with pytest.raises(ActionRefused) as refused:
        await one.restart(incident_id="default/c", target=CHECKOUT, limits=limits)

    assert refused.value.reason == "HourlyCap"
    assert "2026-11-29T12:00:00Z" in str(refused.value)
    assert restarts(aws) == 2

    clock.now = datetime(2026, 11, 29, 12, 0, 1, tzinfo=UTC)
    await one.restart(incident_id="default/c", target=CHECKOUT, limits=limits)
    assert restarts(aws) == 3


async def test_a_cap_of_zero_allows_no_restart(
    aws: Aws, remediator: Callable[..., Restarter]
) -> None:
    with pytest.raises(ActionRefused) as refused:
        await remediator().restart(
            incident_id="default/a",
            target=CHECKOUT,
            limits=RemediationPolicy(max_per_hour=0),
        )

    assert refused.value.reason == "HourlyCap"
    assert restarts(aws) == 0


async def test_a_refused_incident_can_retry_once_the_cooldown_passed(
    aws: Aws, remediator: Callable[..., Restarter]
) -> None:
    clock = Clock(datetime(2026, 11, 29, 11, 0, 0, tzinfo=UTC))
    await remediator(clock=clock).restart(incident_id="default/a", target=CHECKOUT, limits=LIMITS)
    with pytest.raises(ActionRefused):
        await remediator(clock=clock).restart(
            incident_id="default/b", target=CHECKOUT, limits=LIMITS
        )

    # The refusal wrote nothing: no claim stands in the way of b's retry.
    clock.now += timedelta(seconds=LIMITS.cooldown_seconds + 1)
    receipt = await remediator(clock=clock).restart(
        incident_id="default/b", target=CHECKOUT, limits=LIMITS
    )
    assert not receipt.reused


# --- without a table ---------------------------------------------------------


async def test_without_a_table_one_process_still_restarts_once_per_incident(
    aws: Aws, remediator: Callable[..., Restarter]
) -> None:
    one = remediator(guard_table=None)

    first = await one.restart(incident_id="default/a", target=CHECKOUT, limits=LIMITS)
    again = await one.restart(incident_id="default/a", target=CHECKOUT, limits=LIMITS)
    with pytest.raises(ActionRefused) as refused:
        await one.restart(incident_id="default/b", target=CHECKOUT, limits=LIMITS)

    assert again.reused and again.ref == first.ref
    assert refused.value.reason == "Cooldown"
    assert restarts(aws) == 1


# --- failures ----------------------------------------------------------------


async def test_an_unknown_service_fails_clearly(
    aws: Aws, remediator: Callable[..., Restarter]
) -> None:
    with pytest.raises(RemediationFailed, match="ECS service nope not found in cluster demo"):
        await remediator().restart(
            incident_id="default/a", target=Target(REGION, "demo", "nope"), limits=LIMITS
        )
    with pytest.raises(RemediationFailed, match="ClusterNotFoundException"):
        await remediator().restart(
            incident_id="default/b",
            target=Target(REGION, "nope", "checkout"),
            limits=LIMITS,
        )

    assert restarts(aws) == 0
    # Nothing was claimed: a later Incident of a real service is not held back.
    receipt = await remediator().restart(incident_id="default/c", target=CHECKOUT, limits=LIMITS)
    assert not receipt.reused


async def test_a_denied_restart_fails_and_holds_back_no_one(
    aws: Aws, table: str, remediator: Callable[..., Restarter]
) -> None:
    denied = remediator(ecs=aws.client("ecs", deny={"UpdateService"}))
    before = aws.primary()["id"]

    with pytest.raises(RemediationFailed, match=r"AccessDeniedException.*IAM"):
        await denied.restart(incident_id="default/a", target=CHECKOUT, limits=LIMITS)

    assert aws.primary()["id"] == before
    assert await DynamoGuard(client=aws.client("dynamodb"), table=table).read("default/a") is None
    # Neither the cooldown nor the hour's count kept the failed attempt.
    receipt = await remediator().restart(incident_id="default/b", target=CHECKOUT, limits=LIMITS)
    assert not receipt.reused
    assert aws.primary()["id"] == receipt.ref


async def test_a_target_in_another_region_than_the_client_fails_clearly(
    aws: Aws, remediator: Callable[..., Restarter]
) -> None:
    elsewhere = Target("eu-west-1", "demo", "checkout")

    with pytest.raises(RemediationFailed, match="region eu-west-1"):
        await remediator().restart(incident_id="default/a", target=elsewhere, limits=LIMITS)
    assert restarts(aws) == 0


# --- rollout -----------------------------------------------------------------


async def test_rollout_against_moto(aws: Aws, remediator: Callable[..., Restarter]) -> None:
    # moto fixes a deployment's progress when the service is created (see ecs.py):
    # "checkout" has no task running, "stable" has all of them.
    aws.ecs_service(service="stable", running=2)
    stable = Target(REGION, "demo", "stable")
    one = remediator()

    pending = await one.restart(incident_id="default/a", target=CHECKOUT, limits=LIMITS)
    done = await one.restart(incident_id="default/b", target=stable, limits=LIMITS)

    assert await one.rollout(target=CHECKOUT, deployment_id=pending.ref) == "InProgress"
    assert await one.rollout(target=stable, deployment_id=done.ref) == "Succeeded"


async def test_rollout_of_an_unknown_service_fails(
    remediator: Callable[..., Restarter],
) -> None:
    with pytest.raises(RemediationFailed, match="not found"):
        await remediator().rollout(target=Target(REGION, "demo", "nope"), deployment_id="ecs-svc/1")


def deployment(id: str, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": id,
        "status": status,
        "desiredCount": 2,
        "runningCount": 0,
        "pendingCount": 2,
        **fields,
    }


STEADY = {"runningCount": 2, "pendingCount": 0}


@pytest.mark.parametrize(
    ("deployments", "expected"),
    [
        pytest.param([deployment("ours", "PRIMARY", rolloutState="IN_PROGRESS")], "InProgress"),
        pytest.param([deployment("ours", "PRIMARY", rolloutState="COMPLETED")], "Succeeded"),
        pytest.param(
            [deployment("ours", "PRIMARY", rolloutState="FAILED", **STEADY)],
            "Failed",
            id="circuit-breaker",
        ),
        pytest.param(
            [deployment("ours", "PRIMARY", rolloutState="IN_PROGRESS", **STEADY)],
            "Succeeded",
            id="steady-before-rollout-state-moves",
        ),
        pytest.param([deployment("ours", "PRIMARY", **STEADY)], "Succeeded", id="classic-lb"),
        pytest.param(
            [deployment("ours", "PRIMARY", **STEADY), deployment("old", "ACTIVE")],
            "InProgress",
            id="classic-lb-old-tasks-draining",
        ),
        pytest.param(
            [
                deployment("newer", "PRIMARY", rolloutState="COMPLETED", **STEADY),
                deployment("ours", "ACTIVE", rolloutState="IN_PROGRESS"),
            ],
            "Succeeded",
            id="superseded-by-a-completed-deployment",
        ),
        pytest.param(
            [
                deployment("newer", "PRIMARY", rolloutState="IN_PROGRESS"),
                deployment("ours", "ACTIVE", rolloutState="IN_PROGRESS"),
            ],
            "InProgress",
            id="superseded-still-rolling",
        ),
        pytest.param(
            [
                deployment("rollback", "PRIMARY", rolloutState="COMPLETED", **STEADY),
                deployment("ours", "ACTIVE", rolloutState="FAILED"),
            ],
            "Failed",
            id="ours-failed-and-was-rolled-back",
        ),
        pytest.param(
            [deployment("newer", "PRIMARY", rolloutState="COMPLETED", **STEADY)],
            "Succeeded",
            id="ours-drained-away",
        ),
        pytest.param(
            [deployment("newer", "PRIMARY", rolloutState="FAILED")],
            "Failed",
            id="ours-gone-newer-failed",
        ),
    ],
)
def test_judge_rollout_on_real_ecs_shapes(deployments: list[Any], expected: str) -> None:
    service: Any = {"serviceName": "checkout", "status": "ACTIVE", "deployments": deployments}

    assert judge_rollout(service, "ours") == expected


# --- helpers -----------------------------------------------------------------


def run_in_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run coroutine factories at once, one thread and event loop each (like replicas).

    Returns each call's result or the exception it raised.
    """
    start = threading.Barrier(len(calls))
    outcomes: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = asyncio.run(calls[index]())
        except (ActionRefused, RemediationFailed) as error:
            outcomes[index] = error

    threads = [
        threading.Thread(target=run, args=(i,), name=uuid.uuid4().hex) for i in range(len(calls))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes
