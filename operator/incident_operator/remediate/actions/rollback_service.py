"""`rollback_service`: an ECS service back on the task definition it ran before.

Most incidents follow a deployment. This action reads the service's
deployment history (ListServiceDeployments, the SUCCESSFUL ones, newest
first; DescribeServiceRevisions for what each deployed) and takes the newest
completed deployment whose task definition is not the one the service runs
now: the revision before the deployment the alarm followed. It refuses when
there is none (NoPreviousDeployment), and when the current deployment began
longer ago than the policy's `maxDeploymentAgeHours` (DeploymentTooOld: an
alarm long after a deployment is unlikely to be its fault, and the older
revision is less likely to still fit its surroundings).

Acting is `UpdateService(taskDefinition=<that revision's ARN>)`: ECS starts a
deployment of it. The marker is the service's task definition. Acting moves
it, so "happened" is "it moved on from the one before": after a crash the
retry adopts the rollback instead of rolling back again, which would go
back one deployment further. Verified by the rollout of the PRIMARY
deployment while the service runs the receipt's task definition
(ecs.judge_rollout); another task definition there means someone deployed
over it, which is not ours to judge (Failed).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field

from ...models import Model
from .. import ActionRefused, Progress, Target, aws_failure
from ..ecs import describe, judge_rollout, primary, update
from ..plugin import Action, NoParameters, Observation, Request

# How far back the history is read: 5 pages of 20 deployments. A service
# restarted more often than that since its last new task definition has no
# previous one as far as this action is concerned.
PAGES = 5
PAGE = 20
REVISIONS_PER_CALL = 20
_EPOCH = datetime.fromtimestamp(0, UTC)


class RollbackSettings(Model):
    """How recent a deployment must be for this policy to roll it back."""

    max_deployment_age_hours: Annotated[int, Field(ge=1, le=24 * 30)] = Field(
        24,
        description="Roll back only a deployment that began at most this many hours ago.",
    )


@dataclass(frozen=True)
class History(Observation):
    """The service now (marker: its task definition), and what it ran before."""

    previous: str | None = None  # the task definition ARN to go back to


Rollback = Request[Target, NoParameters, RollbackSettings]


class RollbackService(Action[Target, NoParameters, RollbackSettings]):
    name = "rollback_service"
    summary = (
        "go back to the task definition of the incident's own service's previous completed "
        "deployment; when the problem began with its latest deployment"
    )
    noun = "Rollback"
    iam = (
        "ecs:DescribeServices",
        "ecs:ListServiceDeployments",
        "ecs:DescribeServiceRevisions",
        "ecs:UpdateService",
    )
    targets = (Target,)
    Parameters = NoParameters
    Settings = RollbackSettings

    @classmethod
    def explain(cls, settings: RollbackSettings) -> str:
        return (
            "none; it only rolls back a deployment that began within the last "
            f"{settings.max_deployment_age_hours} h"
        )

    async def observe(self, request: Rollback) -> History:
        service = await describe(self.context.ecs, request.target)
        current = service.get("taskDefinition") or primary(service).task_definition or ""
        started = primary(service).created_at
        previous = await self._previous(request.target, current=current)
        return History(
            marker=current,
            since=started.astimezone(UTC) if started is not None else None,
            previous=previous,
        )

    def plan(self, request: Rollback, before: Observation) -> None:
        assert isinstance(before, History)
        if before.previous is None:
            raise ActionRefused(
                "NoPreviousDeployment",
                f"{request.target} has no earlier completed deployment with another task "
                f"definition than {_short(before.marker)}; nothing rolled back.",
            )
        limit = timedelta(hours=request.settings.max_deployment_age_hours)
        if before.since is not None and self.context.clock() - before.since > limit:
            raise ActionRefused(
                "DeploymentTooOld",
                f"the deployment of {_short(before.marker)} on {request.target} began "
                f"{before.since.isoformat(timespec='seconds')}, more than "
                f"{request.settings.max_deployment_age_hours} h ago "
                "(actions.rollback_service.maxDeploymentAgeHours); nothing rolled back.",
            )

    async def act(self, request: Rollback, before: Observation) -> Observation:
        assert isinstance(before, History) and before.previous is not None
        service = await update(
            self.context.ecs,
            request.target,
            doing=f"roll ECS service {request.target} back to {_short(before.previous)}",
            taskDefinition=before.previous,
        )
        deployment = primary(service)
        return Observation(
            marker=service.get("taskDefinition") or before.previous,
            since=deployment.started(default=self.context.clock()),
        )

    def happened(self, request: Rollback, before: str, now: Observation) -> bool:
        return now.marker != before

    async def verify(self, request: Rollback, receipt: str) -> Progress:
        service = await describe(self.context.ecs, request.target)
        if service.get("taskDefinition") != receipt:
            return "Failed"  # deployed over since: not ours to judge
        return judge_rollout(service, primary(service).id)

    async def _previous(self, target: Target, *, current: str) -> str | None:
        """The task definition of the newest SUCCESSFUL deployment that is not `current`."""
        ecs = self.context.ecs.reads(target)
        revisions: list[str] = []
        token: str | None = None
        for _ in range(PAGES):
            page = await _aws(
                f"list the deployments of ECS service {target}",
                ecs.list_service_deployments,
                cluster=target.cluster,
                service=target.service,
                status=["SUCCESSFUL"],
                maxResults=PAGE,
                **({"nextToken": token} if token else {}),
            )
            newest_first = sorted(
                page.get("serviceDeployments", []),
                key=lambda d: d.get("createdAt") or d.get("startedAt") or _EPOCH,
                reverse=True,
            )
            for deployment in newest_first:
                arn = deployment.get("targetServiceRevisionArn")
                if arn and arn not in revisions:
                    revisions.append(arn)
            token = page.get("nextToken")
            if not token:
                break
        for start in range(0, len(revisions), REVISIONS_PER_CALL):
            chunk = revisions[start : start + REVISIONS_PER_CALL]
            found = await _aws(
                f"describe the service revisions of ECS service {target}",
                ecs.describe_service_revisions,
                serviceRevisionArns=chunk,
            )
            by_arn = {r.get("serviceRevisionArn"): r for r in found.get("serviceRevisions", [])}
            for arn in chunk:
                definition = by_arn.get(arn, {}).get("taskDefinition")
                if definition and definition != current:
                    return str(definition)
        return None


async def _aws(doing: str, call: Any, **arguments: Any) -> Any:
    try:
        return await asyncio.to_thread(call, **arguments)
    except (ClientError, BotoCoreError) as error:
        raise aws_failure(error, doing=doing) from error


def _short(task_definition: str) -> str:
    """`family:revision` of a task definition ARN, for messages."""
    return task_definition.rsplit("/", 1)[-1]
