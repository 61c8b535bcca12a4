"""`ecs`: the ECS service's recent deployments and its last service events.

One DescribeServices: deployments (when, which task definition, rollout
state, tasks running of desired) and the newest events ("has reached a
steady state", "unable to place a task", "task failed ELB health checks").
A forced restart is a deployment too: ECS does not tell them apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field

from ...remediate import Target, UnresolvedTarget, resolve
from .. import Found, Skip, line
from ..collector import Collector, CollectorSettings, Request, blocking

MAX_DEPLOYMENTS = 5


class EcsSettings(CollectorSettings):
    """How many service events to keep."""

    events: Annotated[int, Field(ge=0, le=20)] = Field(5, description="Newest service events.")


def ago(then: datetime, now: datetime) -> str:
    """`then` as people say it relative to `now`: 12m ago, 3h ago."""
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def _family(task_definition: str | None) -> str | None:
    """`checkout:7` from the task definition's ARN."""
    return task_definition.rsplit("/", 1)[-1] if task_definition else None


def _when(value: Any) -> datetime | None:
    return value.astimezone(UTC) if isinstance(value, datetime) else None


class EcsService(Collector[EcsSettings]):
    name = "ecs"
    summary = "the ECS service's recent deployments and its last service events"
    iam = ("ecs:DescribeServices",)
    askable = ("events",)
    Settings = EcsSettings

    async def collect(self, request: Request[EcsSettings]) -> Found:
        spec = request.incident.spec
        if spec.service.platform != "ecs":
            raise Skip(f"not an ECS service (platform {spec.service.platform})")
        try:
            target = resolve(
                spec.service,
                default_cluster=self.context.default_cluster,
                default_region=self.context.default_region,
            )
        except UnresolvedTarget as why:
            raise Skip(str(why)) from None
        assert isinstance(target, Target)
        ecs = self.context.aws.client("ecs", target.region)
        answer = await blocking(
            ecs.describe_services, cluster=target.cluster, services=[target.service]
        )
        services = [s for s in answer.get("services", []) if s.get("status") == "ACTIVE"]
        if not services:
            reasons = [f.get("reason", "?") for f in answer.get("failures", [])]
            return Found(
                summary=f"service {target} not found ({', '.join(reasons) or 'not ACTIVE'})",
                data={"service": str(target), "found": False},
            )
        service = services[0]
        arn = service.get("serviceArn", "")
        ours = arn.split(":")[4] if arn.count(":") >= 5 else None
        if target.account is not None and ours is not None and ours != target.account:
            # A service of the same name in our account is not the one the alarm is about.
            raise Skip(f"the alarm names {target} in account {target.account}, not {ours}")
        now = request.now
        deployments = sorted(
            service.get("deployments", []),
            key=lambda d: _when(d.get("createdAt")) or now,
            reverse=True,
        )[:MAX_DEPLOYMENTS]
        shown = [
            {
                "status": d.get("status"),
                "taskDefinition": _family(d.get("taskDefinition")),
                "createdAt": _iso(d.get("createdAt")),
                "updatedAt": _iso(d.get("updatedAt")),
                "rolloutState": d.get("rolloutState"),
                "running": d.get("runningCount"),
                "desired": d.get("desiredCount"),
                "pending": d.get("pendingCount"),
                "failedTasks": d.get("failedTasks"),
            }
            for d in deployments
        ]
        events = sorted(
            service.get("events", []),
            key=lambda e: _when(e.get("createdAt")) or now,
            reverse=True,
        )[: request.settings.events]
        shown_events = [
            {"at": _iso(e.get("createdAt")), "message": line(e.get("message", ""), 300)}
            for e in events
        ]
        primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
        deployed_at = _when(primary.get("createdAt")) if primary else None
        parts = []
        if primary is not None:
            when = ago(deployed_at, now) if deployed_at else "at an unknown time"
            parts.append(
                f"deployed {when} ({_family(primary.get('taskDefinition'))}, rollout "
                f"{primary.get('rolloutState') or 'unknown'}, "
                f"{primary.get('runningCount', 0)}/{primary.get('desiredCount', 0)} running)"
            )
        if len(deployments) > 1:
            parts.append(f"{len(deployments)} deployments")
        if shown_events:
            parts.append(f"last event {shown_events[0]['message']!r}")
        else:
            parts.append("no service events")
        return Found(
            summary="ECS: " + "; ".join(parts),
            data={
                "service": str(target),
                "desired": service.get("desiredCount"),
                "running": service.get("runningCount"),
                "deployments": shown,
                "events": shown_events,
            },
            deployed_at=deployed_at,
        )


def _iso(value: Any) -> str | None:
    when = _when(value)
    return when.isoformat(timespec="seconds") if when else None
