"""What the ECS actions share: clients per region, reading a service, its
deployments, and judging a rollout.

UpdateService has no idempotency token, so boto3 never retries it: the
`once` client of a region makes that call without retries; reads keep
boto3's retries, they are safe to repeat. A retry is always a new attempt of
the executor, which looks at the service first (see executor.py).

Rollout, and what moto does not do
----------------------------------
Real ECS gives rolling-update deployments a `rolloutState`: IN_PROGRESS,
then COMPLETED or FAILED (the deployment circuit breaker). Services behind a
Classic Load Balancer report none; for them the classic test applies, the one
the `services_stable` waiter uses: the deployment is PRIMARY and the only
one, with `runningCount >= desiredCount` and `pendingCount == 0`. Either
signal means Succeeded.

moto never moves a deployment on. A service's single deployment gets its
state when the service is created, from MOTO_ECS_SERVICE_RUNNING: COMPLETED
with every task running if that is >= desiredCount, else IN_PROGRESS with
that many running and the rest pending. `forceNewDeployment` then only gives
the same deployment a new id and new timestamps, in place: there is never an
old deployment draining beside the new one. So against moto a restarted
service reads Succeeded at once when it was created with
MOTO_ECS_SERVICE_RUNNING >= desiredCount, and InProgress forever otherwise
(the policy's rollout timeout ends that), and both signals agree. Superseded
and vanished deployments only happen on real ECS; `judge_rollout` is a pure
function so that those cases are tested on ECS-shaped data.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..aws import CLIENT_CONFIG, error_code, explain, transient
from ..aws_calls import timed
from . import (
    ActionRefused,
    NothingDone,
    OutcomeUnknown,
    Progress,
    RemediationFailed,
    Target,
    aws_failure,
)

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ecs.type_defs import ServiceTypeDef

# For UpdateService only: no retries by boto3 (see the module's docstring).
ONCE_CONFIG = CLIENT_CONFIG.merge(Config(retries={"mode": "standard", "total_max_attempts": 1}))

# The service is not there: nothing was done, and nothing will be.
_GONE = frozenset(
    {"ServiceNotFoundException", "ClusterNotFoundException", "ServiceNotActiveException"}
)


@dataclass
class EcsClients:
    """ECS clients per region, made on first use: (with retries, without).

    `ecs` handed in (tests, a fixed endpoint) serves its own region only and
    makes every call, UpdateService included. `region`: for the clients
    made here (boto3 reads AWS_DEFAULT_REGION, not the agent's AWS_REGION).
    """

    ecs: ECSClient | None = None
    region: str | None = None
    _by_region: dict[str, tuple[ECSClient, ECSClient]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pair = _clients(self.region) if self.ecs is None else (self.ecs, self.ecs)
        self._default_region = pair[0].meta.region_name
        self._by_region[self._default_region] = pair

    def pair(self, target: Target) -> tuple[ECSClient, ECSClient]:
        clients = self._by_region.get(target.region)
        if clients is None:
            if self.ecs is not None:
                raise RemediationFailed(
                    f"{target} is in region {target.region}, "
                    f"but this operator's ECS client is for {self._default_region}."
                )
            clients = self._by_region[target.region] = _clients(target.region)
        return clients

    def reads(self, target: Target) -> ECSClient:
        return self.pair(target)[0]

    def once(self, target: Target) -> ECSClient:
        return self.pair(target)[1]


def _clients(region: str | None) -> tuple[ECSClient, ECSClient]:
    return (
        timed(boto3.client("ecs", region_name=region, config=CLIENT_CONFIG)),
        timed(boto3.client("ecs", region_name=region, config=ONCE_CONFIG)),
    )


async def describe(clients: EcsClients, target: Target) -> ServiceTypeDef:
    """The ACTIVE service, refused if its ARN is in another account than the alarm's."""
    cluster, service = target.cluster, target.service
    try:
        response = await asyncio.to_thread(
            clients.reads(target).describe_services, cluster=cluster, services=[service]
        )
    except (ClientError, BotoCoreError) as error:
        raise aws_failure(error, doing=f"describe ECS service {cluster}/{service}") from error
    for found in response.get("services", []):
        if found.get("status") == "ACTIVE":
            _same_account(found, target)
            return found
    reasons = [failure.get("reason", "?") for failure in response.get("failures", [])]
    reasons += [str(found.get("status")) for found in response.get("services", [])]
    raise RemediationFailed(
        f"ECS service {service} not found in cluster {cluster} ({', '.join(reasons)}); "
        "check spec.service.name and its cluster."
    )


async def update(
    clients: EcsClients, target: Target, *, doing: str, **change: Any
) -> ServiceTypeDef:
    """UpdateService once (no retries), its failures sorted for the executor."""
    try:
        response = await asyncio.to_thread(
            clients.once(target).update_service,
            cluster=target.cluster,
            service=target.service,
            **change,
        )
    except (ClientError, BotoCoreError) as error:
        code = error_code(error) if isinstance(error, ClientError) else None
        if code in _GONE:
            raise NothingDone(explain(error, doing=doing)) from error
        if transient(error):
            # ECS may have acted on it (a 5xx, no answer) or may act on the
            # next one (throttled): the claim is kept for the next attempt,
            # which looks before it acts.
            raise OutcomeUnknown(
                explain(error, doing=doing) + "; whether ECS did it is not known yet. "
                "The next attempt for this Incident checks, and does not do it twice."
            ) from error
        raise RemediationFailed(explain(error, doing=doing)) from error
    return response["service"]


def _same_account(service: ServiceTypeDef, target: Target) -> None:
    """Refuse a target whose ARN named another account than the one we act in.

    The names were looked up in our own account: a service of the same name
    there is not the one the alarm is about.
    """
    arn = service.get("serviceArn", "")
    ours = arn.split(":")[4] if arn.count(":") >= 5 else None
    if target.account is not None and ours is not None and ours != target.account:
        raise ActionRefused(
            "OtherAccount",
            f"the alarm names {target} in AWS account {target.account}, but this operator "
            f"acts in account {ours}; nothing done.",
        )


def judge_rollout(service: ServiceTypeDef, deployment_id: str) -> Progress:
    """How the restart's deployment is doing, from a DescribeServices answer."""
    deployments = service.get("deployments", [])
    ours = next((d for d in deployments if d.get("id") == deployment_id), None)
    if ours is not None and ours.get("rolloutState") == "FAILED":
        # The circuit breaker gave up on it (and may be rolling back).
        return "Failed"
    if ours is None or ours.get("status") != "PRIMARY":
        # Replaced by a newer deployment (still draining: ACTIVE; drained:
        # gone from the list). A forced restart asks only for fresh tasks of
        # the current definition, and the newer deployment brings those: so
        # its progress is ours.
        ours = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
        if ours is None:
            return "Failed"
        if ours.get("rolloutState") == "FAILED":
            return "Failed"
    if ours.get("rolloutState") == "COMPLETED":
        return "Succeeded"
    steady = (
        len(deployments) == 1
        and ours.get("runningCount", 0) >= ours.get("desiredCount", 0)
        and ours.get("pendingCount", 0) == 0
    )
    return "Succeeded" if steady else "InProgress"


@dataclass(frozen=True)
class Deployment:
    id: str
    created_at: datetime | None
    task_definition: str | None = None

    def started(self, *, default: datetime) -> datetime:
        return self.created_at.astimezone(UTC) if self.created_at is not None else default


def primary(service: ServiceTypeDef) -> Deployment:
    for deployment in service.get("deployments", []):
        if deployment.get("status") == "PRIMARY" and "id" in deployment:
            return Deployment(
                id=deployment["id"],
                created_at=deployment.get("createdAt"),
                task_definition=deployment.get("taskDefinition"),
            )
    controller = service.get("deploymentController", {}).get("type", "ECS")
    raise RemediationFailed(
        f"ECS service {service.get('serviceName')} has no PRIMARY deployment "
        f"(deployment controller {controller}); only ECS rolling-update services can be acted on."
    )
