"""Restart an ECS service, at most once per Incident.

A restart is `UpdateService(forceNewDeployment=True)`: ECS starts fresh
tasks of the same task definition and drains the old ones. The sequence:

1. The Incident's claim already names a deployment: done before, reuse it.
2. Describe the service; remember its PRIMARY deployment P.
3. Claim the restart (`claims.py`: the claim, the cooldown and the hourly cap
   in one conditional transaction), recording P.
4. UpdateService; the new PRIMARY deployment D is the answer.
5. Write D into the claim.

A process can die anywhere. Dying between 3 and 4 leaves a claim without a
deployment while P is still PRIMARY: the next attempt takes the claim over
(compare-and-swap, so two recoverers cannot both restart) and restarts.
Dying between 4 and 5 leaves the same claim, but the PRIMARY deployment is no
longer P: the next attempt adopts it and does not restart again. Comparing
deployment ids, rather than creation times with the claim's time, keeps
clock skew between this host and AWS out of the decision. A deployment
someone else started in that window is adopted too: the service got fresh
tasks, which is all a restart asks for.

UpdateService has no idempotency token, so boto3 never retries it (a client
without retries makes that call; reads and DynamoDB writes keep boto3's
retries, they are safe to repeat). A retry is always a new `restart`, which
looks at the service first. A failure that may pass (throttling, a 5xx, no
answer) keeps the claim and raises RestartOutcomeUnknown: the next attempt
adopts the restart if the PRIMARY deployment moved, and restarts otherwise.
Any other failure is settled at once: if the PRIMARY deployment moved, the
restart happened; if not, the claim is released so that the cooldown and cap
do not hold back the next Incident.

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
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from weakref import WeakValueDictionary

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..aws import CLIENT_CONFIG, explain, transient
from ..crashpoints import crash_point
from ..models import RemediationPolicy
from . import (
    RemediationFailed,
    RestartOutcomeUnknown,
    RestartReceipt,
    RestartRefused,
    Rollout,
    Target,
    aws_failure,
)
from .claims import Claim, RestartGuard, new_claim, taken_over
from .dynamo_guard import DynamoGuard
from .memory_guard import MemoryGuard

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ecs.type_defs import ServiceTypeDef

log = logging.getLogger(__name__)

# For UpdateService only: no retries by boto3 (see the module's docstring).
RESTART_CONFIG = CLIENT_CONFIG.merge(Config(retries={"mode": "standard", "total_max_attempts": 1}))

# The service is not there: nothing was restarted, and nothing will be.
_GONE = frozenset(
    {"ServiceNotFoundException", "ClusterNotFoundException", "ServiceNotActiveException"}
)


def _now() -> datetime:
    return datetime.now(UTC)


class EcsRemediator:
    """Restarts ECS services; see the module's docstring for the guarantees.

    With `guard_table` None the guard lives in this process only: it keeps
    one process from restarting twice for one Incident, but not two replicas,
    and not a process that crashed and came back. Production must set
    TIMELINE_TABLE.
    """

    def __init__(
        self,
        *,
        ecs: ECSClient | None = None,
        dynamodb: DynamoDBClient | None = None,
        guard_table: str | None,
        region: str | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        # `region`: for the clients made here (boto3 reads AWS_DEFAULT_REGION,
        # not the agent's AWS_REGION). A client handed in serves its own
        # region only, and makes every call, UpdateService included; ours
        # are made per target region on demand, two per region.
        self._own_clients = ecs is None
        default = _clients(region) if ecs is None else (ecs, ecs)
        self._default_region = default[0].meta.region_name
        self._ecs: dict[str, tuple[ECSClient, ECSClient]] = {self._default_region: default}
        self._guard: RestartGuard
        if guard_table is None:
            log.warning("No TIMELINE_TABLE: ECS restarts are guarded within this process only.")
            self._guard = MemoryGuard()
        else:
            client = dynamodb or boto3.client("dynamodb", region_name=region, config=CLIENT_CONFIG)
            self._guard = DynamoGuard(client=client, table=guard_table)
        self._clock = clock
        # One restart at a time per Incident in this process, so that two
        # coroutines never both find a claim unfinished and both act on it.
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    async def restart(
        self, *, incident_id: str, target: Target, limits: RemediationPolicy
    ) -> RestartReceipt:
        ecs, restarts = self._clients(target)
        lock = self._locks.setdefault(incident_id, asyncio.Lock())
        async with lock:
            claim = await self._guard.read(incident_id)
            if claim is not None and claim.deployment_id:
                return _receipt(claim, reused=True)
            service = await self._describe(ecs, target.cluster, target.service)
            _same_account(service, target)
            primary = _primary(service)
            owner = uuid.uuid4().hex
            if claim is None:
                fresh = new_claim(
                    incident_id=incident_id,
                    target=str(target),
                    owner=owner,
                    previous_deployment_id=primary.id,
                    now=self._clock(),
                )
                claim = await self._guard.claim(fresh, limits=limits)
            if claim.claimed_by != owner:
                claim = await self._resume(claim, primary=primary, owner=owner, limits=limits)
                if claim.deployment_id:
                    return _receipt(claim, reused=True)
            return await self._restart(
                ecs, restarts, claim, cluster=target.cluster, service=target.service
            )

    async def rollout(self, *, target: Target, deployment_id: str) -> Rollout:
        service = await self._describe(self._clients(target)[0], target.cluster, target.service)
        return judge_rollout(service, deployment_id)

    async def _resume(
        self,
        claim: Claim,
        *,
        primary: _Deployment,
        owner: str,
        limits: RemediationPolicy,
    ) -> Claim:
        """Finish an earlier attempt's claim: adopt its restart, or take the claim over."""
        if claim.deployment_id:
            return claim
        if claim.previous_deployment_id is not None:
            restarted = primary.id != claim.previous_deployment_id
        else:
            # A claim that never recorded what it saw: fall back to time.
            restarted = primary.started(default=claim.claimed_at) > claim.claimed_at
        if restarted:
            log.info(
                "ECS service %s was restarted by an earlier attempt; adopting deployment %s",
                claim.target,
                primary.id,
                extra={"incident": claim.incident_id, "target": claim.target},
            )
            return await self._guard.complete(
                claim,
                deployment_id=primary.id,
                restarted_at=primary.started(default=claim.claimed_at),
            )
        taken = await self._guard.take_over(
            claim,
            taken_over(claim, owner=owner, previous_deployment_id=primary.id, now=self._clock()),
            limits=limits,
        )
        if taken is not None:
            return taken
        current = await self._guard.read(claim.incident_id)
        if current is not None and current.deployment_id:
            return current
        raise RestartOutcomeUnknown(
            f"Another process is restarting {claim.target} for this Incident right now."
        )

    async def _restart(
        self, ecs: ECSClient, restarts: ECSClient, claim: Claim, *, cluster: str, service: str
    ) -> RestartReceipt:
        doing = f"restart ECS service {claim.target}"
        crash_point("after-claim")
        log.info(
            "Restarting ECS service %s",
            claim.target,
            extra={"incident": claim.incident_id, "target": claim.target},
        )
        try:
            response = await asyncio.to_thread(
                restarts.update_service, cluster=cluster, service=service, forceNewDeployment=True
            )
        except (ClientError, BotoCoreError) as error:
            code = (
                error.response.get("Error", {}).get("Code")
                if isinstance(error, ClientError)
                else None
            )
            if code in _GONE:
                await self._release(claim)
                raise RemediationFailed(explain(error, doing=doing)) from error
            if transient(error):
                # ECS may have acted on it (a 5xx, no answer) or may act on
                # the next one (throttled): keep the claim for the next
                # attempt, which looks before it restarts.
                raise RestartOutcomeUnknown(
                    explain(error, doing=doing) + "; whether ECS restarted it is not known yet. "
                    "The next attempt for this Incident checks, and does not restart twice."
                ) from error
            return await self._settle(ecs, claim, cluster=cluster, service=service, error=error)
        crash_point("after-restart")
        deployment = _primary(response["service"])
        started_at = self._clock()
        try:
            stored = await self._guard.complete(
                claim, deployment_id=deployment.id, restarted_at=started_at
            )
        except RemediationFailed:
            # The restart happened; only writing it down failed. The claim
            # still records the previous deployment, so the next attempt sees
            # the service moved on and adopts this deployment.
            log.warning(
                "ECS service %s restarted (deployment %s), but the claim was not updated",
                claim.target,
                deployment.id,
                exc_info=True,
                extra={"incident": claim.incident_id, "target": claim.target},
            )
        else:
            if stored.deployment_id != deployment.id:
                log.warning(
                    "Claim of %s already named deployment %s; ours is %s",
                    claim.incident_id,
                    stored.deployment_id,
                    deployment.id,
                    extra={"incident": claim.incident_id, "target": claim.target},
                )
        return RestartReceipt(deployment_id=deployment.id, started_at=started_at)

    async def _settle(
        self,
        ecs: ECSClient,
        claim: Claim,
        *,
        cluster: str,
        service: str,
        error: ClientError | BotoCoreError,
    ) -> RestartReceipt:
        """After a failed UpdateService: adopt the restart if it happened, else release."""
        doing = f"restart ECS service {claim.target}"
        # Refused, but look: someone may have restarted it meanwhile.
        try:
            primary = _primary(await self._describe(ecs, cluster, service))
        except RemediationFailed as unknown:
            raise RestartOutcomeUnknown(
                f"{explain(error, doing=doing)}; and then: {unknown}. The claim is kept "
                "until a later attempt for this Incident can see the service."
            ) from error
        if primary.id != claim.previous_deployment_id:
            stored = await self._guard.complete(
                claim,
                deployment_id=primary.id,
                restarted_at=primary.started(default=self._clock()),
            )
            return _receipt(stored, reused=False)
        await self._release(claim)
        raise RemediationFailed(explain(error, doing=doing)) from error

    async def _release(self, claim: Claim) -> None:
        try:
            await self._guard.release(claim)
        except RemediationFailed:
            # Reported, not raised: the caller is already failing with the
            # cause that matters (why ECS did not restart). A stale cooldown
            # stamp or count expires by itself.
            log.warning(
                "Could not release the restart claim of %s",
                claim.incident_id,
                exc_info=True,
                extra={"incident": claim.incident_id, "target": claim.target},
            )

    async def _describe(self, ecs: ECSClient, cluster: str, service: str) -> ServiceTypeDef:
        try:
            response = await asyncio.to_thread(
                ecs.describe_services, cluster=cluster, services=[service]
            )
        except (ClientError, BotoCoreError) as error:
            raise aws_failure(error, doing=f"describe ECS service {cluster}/{service}") from error
        for found in response.get("services", []):
            if found.get("status") == "ACTIVE":
                return found
        reasons = [failure.get("reason", "?") for failure in response.get("failures", [])]
        reasons += [str(found.get("status")) for found in response.get("services", [])]
        raise RemediationFailed(
            f"ECS service {service} not found in cluster {cluster} ({', '.join(reasons)}); "
            "check spec.service.name and its cluster."
        )

    def _clients(self, target: Target) -> tuple[ECSClient, ECSClient]:
        """ECS clients for the target's region: (with retries, without)."""
        region = target.region
        clients = self._ecs.get(region)
        if clients is None:
            if not self._own_clients:
                raise RemediationFailed(
                    f"{target} is in region {region}, "
                    f"but this remediator's ECS client is for {self._default_region}."
                )
            clients = self._ecs[region] = _clients(region)
        return clients


def _clients(region: str | None) -> tuple[ECSClient, ECSClient]:
    return (
        boto3.client("ecs", region_name=region, config=CLIENT_CONFIG),
        boto3.client("ecs", region_name=region, config=RESTART_CONFIG),
    )


def _same_account(service: ServiceTypeDef, target: Target) -> None:
    """Refuse a target whose ARN named another account than the one we act in.

    The names were looked up in our own account: a service of the same name
    there is not the one the alarm is about.
    """
    arn = service.get("serviceArn", "")
    ours = arn.split(":")[4] if arn.count(":") >= 5 else None
    if target.account is not None and ours is not None and ours != target.account:
        raise RestartRefused(
            "OtherAccount",
            f"the alarm names {target} in AWS account {target.account}, but this operator "
            f"acts in account {ours}; nothing restarted.",
        )


def judge_rollout(service: ServiceTypeDef, deployment_id: str) -> Rollout:
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
class _Deployment:
    id: str
    created_at: datetime | None

    def started(self, *, default: datetime) -> datetime:
        return self.created_at.astimezone(UTC) if self.created_at is not None else default


def _primary(service: ServiceTypeDef) -> _Deployment:
    for deployment in service.get("deployments", []):
        if deployment.get("status") == "PRIMARY" and "id" in deployment:
            return _Deployment(id=deployment["id"], created_at=deployment.get("createdAt"))
    controller = service.get("deploymentController", {}).get("type", "ECS")
    raise RemediationFailed(
        f"ECS service {service.get('serviceName')} has no PRIMARY deployment "
        f"(deployment controller {controller}); only ECS rolling-update services can be restarted."
    )


def _receipt(claim: Claim, *, reused: bool) -> RestartReceipt:
    assert claim.deployment_id is not None
    return RestartReceipt(
        deployment_id=claim.deployment_id,
        started_at=claim.restarted_at or claim.claimed_at,
        reused=reused,
    )
