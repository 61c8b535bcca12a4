"""`restart_deployment`: a rollout restart of a Kubernetes Deployment.

What `kubectl rollout restart` does: the pod template's
`kubectl.kubernetes.io/restartedAt` annotation set to now, so the
Deployment controller rolls every pod. Only in the namespaces the policy
lists (`spec.actions.restart_deployment.namespaces`); the operator's RBAC
for it is opt-in in the chart (`remediation.kubernetes`).

The marker is that annotation: acting sets it, so "happened" is "the
annotation moved on". Verified by the rollout's status, as `kubectl rollout
status` judges it: the controller saw the latest generation, every replica
is updated and available, and no old one is left; a Progressing condition
with reason ProgressDeadlineExceeded fails it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Annotated, Any, TypeVar

from kubernetes import client
from pydantic import Field

from ...models import Model, Name
from .. import Progress, Workload
from ..kube_calls import call
from ..plugin import Action, NoParameters, Observation, Request

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_T = TypeVar("_T")


class RestartDeploymentSettings(Model):
    """The namespaces whose Deployments this policy may restart."""

    namespaces: Annotated[list[Name], Field(max_length=64)] = Field(
        default_factory=list,
        description="Namespaces whose Deployments may be restarted; empty: none.",
    )


Rollout = Request[Workload, NoParameters, RestartDeploymentSettings]


class RestartDeployment(Action[Workload, NoParameters, RestartDeploymentSettings]):
    name = "restart_deployment"
    summary = (
        "roll every pod of the incident's own Kubernetes Deployment (a rollout restart); "
        "only when fresh pods are likely to fix the problem"
    )
    noun = "Restart"
    rbac = ({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]},)
    targets = (Workload,)
    Parameters = NoParameters
    Settings = RestartDeploymentSettings

    @classmethod
    def refuses(cls, target: Workload, settings: RestartDeploymentSettings) -> str | None:
        if target.namespace in settings.namespaces:
            return None
        allowed = ", ".join(settings.namespaces) or "none"
        return (
            f"namespace {target.namespace} is not one the policy allows restarts in "
            f"(actions.restart_deployment.namespaces: {allowed})"
        )

    async def observe(self, request: Rollout) -> Observation:
        target = request.target
        deployment = await self._call(
            target,
            "read",
            lambda apps: apps.read_namespaced_deployment(target.name, target.namespace),
        )
        return Observation(marker=_restarted_at(deployment))

    async def act(self, request: Rollout, before: Observation) -> Observation:
        target = request.target
        now = self.context.clock().astimezone(UTC).isoformat(timespec="seconds")
        if now == before.marker:  # twice in one second: still a change
            now = self.context.clock().astimezone(UTC).isoformat(timespec="microseconds")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
        deployment = await self._call(
            target,
            "restart",
            lambda apps: apps.patch_namespaced_deployment(target.name, target.namespace, patch),
        )
        return Observation(marker=_restarted_at(deployment))

    def happened(self, request: Rollout, before: str, now: Observation) -> bool:
        return now.marker != before

    async def verify(self, request: Rollout, receipt: str) -> Progress:
        target = request.target
        deployment = await self._call(
            target,
            "read",
            lambda apps: apps.read_namespaced_deployment(target.name, target.namespace),
        )
        return judge_rollout(deployment)

    async def _call(
        self, target: Workload, doing: str, request: Callable[[client.AppsV1Api], _T]
    ) -> _T:
        return await call(
            self.context.kube,
            f"{doing} Deployment {target.namespace}/{target.name}",
            lambda kube: request(client.AppsV1Api(kube)),
            rights="get and patch on deployments",
        )


def _restarted_at(deployment: Any) -> str:
    annotations = deployment.spec.template.metadata.annotations or {}
    return str(annotations.get(RESTARTED_AT, ""))


def judge_rollout(deployment: Any) -> Progress:
    """How a Deployment's rollout is going, as `kubectl rollout status` tells it."""
    status = deployment.status
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return "Failed"
    if (status.observed_generation or 0) < (deployment.metadata.generation or 0):
        return "InProgress"
    wanted = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    if updated < wanted or (status.replicas or 0) > updated:
        return "InProgress"
    if (status.available_replicas or 0) < updated:
        return "InProgress"
    return "Succeeded"
