"""`restart_service`: a fresh set of tasks for an ECS service.

`UpdateService(forceNewDeployment=True)`: ECS starts new tasks of the same
task definition and drains the old ones. The marker is the PRIMARY
deployment: a restart gives the service a new one. Verified by the rollout
of that deployment (see ecs.judge_rollout).
"""

from __future__ import annotations

from datetime import UTC, datetime

from .. import Progress, Target
from ..ecs import describe, judge_rollout, primary, update
from ..plugin import Action, NoParameters, NoSettings, Observation, Request

Restart = Request[Target, NoParameters, NoSettings]


class RestartService(Action[Target, NoParameters, NoSettings]):
    name = "restart_service"
    summary = (
        "force a new deployment of the incident's own service (the one in the data's "
        '"service" field); only when a restart is likely to fix the problem'
    )
    noun = "Restart"
    allowed_by_default = True
    iam = ("ecs:DescribeServices", "ecs:UpdateService")
    targets = (Target,)
    Parameters = NoParameters
    Settings = NoSettings

    async def observe(self, request: Restart) -> Observation:
        deployment = primary(await describe(self.context.ecs, request.target))
        return Observation(marker=deployment.id, since=_utc(deployment.created_at))

    async def act(self, request: Restart, before: Observation) -> Observation:
        service = await update(
            self.context.ecs,
            request.target,
            doing=f"restart ECS service {request.target}",
            forceNewDeployment=True,
        )
        deployment = primary(service)
        return Observation(marker=deployment.id, since=_utc(deployment.created_at))

    def happened(self, request: Restart, before: str, now: Observation) -> bool:
        return now.marker != before

    async def verify(self, request: Restart, receipt: str) -> Progress:
        return judge_rollout(await describe(self.context.ecs, request.target), receipt)


def _utc(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC) if moment is not None else None
