"""`kubernetes`: a Deployment's rollout, its pods that are not ready and why,
and the newest Events about them.

For an Incident whose service is a Kubernetes Deployment (`platform:
kubernetes`), in a namespace the policy lists: an alarm names the
Deployment, and without that list it could name one anywhere the
operator's RBAC reaches, whose pods and Events would then be shown in Slack.

The rollout is judged as `kubectl rollout status` does (the controller saw
the latest generation, every replica updated and available, none old left;
ProgressDeadlineExceeded fails it). The revisions are the Deployment's
ReplicaSets (their `deployment.kubernetes.io/revision`); the newest one's
creation is when it was last deployed.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Any

from kubernetes import client
from pydantic import Field

from ...models import Name
from ...remediate import UnresolvedTarget, Workload, resolve
from .. import Found, Skip, line
from ..collector import Collector, CollectorSettings, Request, blocking
from .ecs_service import ago

REVISION = "deployment.kubernetes.io/revision"
MAX_PODS_SHOWN = 5
MAX_REVISIONS = 5
MAX_LISTED = 500


class KubernetesSettings(CollectorSettings):
    """The namespaces whose Deployments it may read, and how many Events to keep."""

    namespaces: Annotated[list[Name], Field(max_length=64)] = Field(
        default_factory=list,
        description="Namespaces whose Deployments, pods and Events it may read; empty: none.",
    )
    events: Annotated[int, Field(ge=0, le=20)] = Field(5, description="Newest Events.")


def rollout(deployment: client.V1Deployment) -> str:
    """complete, progressing, or failed (ProgressDeadlineExceeded)."""
    status = deployment.status or client.V1DeploymentStatus()
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return "failed (ProgressDeadlineExceeded)"
    desired = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    seen = (status.observed_generation or 0) >= (deployment.metadata.generation or 0)
    done = (
        seen
        and (status.updated_replicas or 0) >= desired
        and (status.available_replicas or 0) >= desired
        and (status.replicas or 0) <= desired
    )
    return "complete" if done else "progressing"


def _pod_trouble(pod: client.V1Pod) -> dict[str, Any] | None:
    """What is wrong with a pod that is not ready; None when it is ready."""
    status = pod.status or client.V1PodStatus()
    ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
    if ready:
        return None
    reasons: list[str] = []
    restarts = 0
    for container in status.container_statuses or []:
        restarts += container.restart_count or 0
        state = container.state
        if state is not None and state.waiting is not None and state.waiting.reason:
            reasons.append(state.waiting.reason)
        last = container.last_state
        if last is not None and last.terminated is not None:
            terminated = last.terminated
            reasons.append(f"{terminated.reason or 'Terminated'} (exit {terminated.exit_code})")
    return {
        "name": pod.metadata.name,
        "phase": status.phase,
        "reasons": [line(r, 100) for r in reasons[:4]],
        "restarts": restarts,
    }


def _when(event: client.CoreV1Event) -> datetime:
    stamp = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
    return stamp if isinstance(stamp, datetime) else datetime.min.replace(tzinfo=UTC)


class Kubernetes(Collector[KubernetesSettings]):
    name = "kubernetes"
    summary = "a Deployment's rollout, its pods that are not ready and why, its newest Events"
    rbac = (
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
    )
    askable = ("events",)
    Settings = KubernetesSettings

    async def collect(self, request: Request[KubernetesSettings]) -> Found:
        service = request.incident.spec.service
        if service.platform != "kubernetes":
            raise Skip(f"not a Kubernetes Deployment (platform {service.platform})")
        try:
            target = resolve(service, default_cluster=None, default_region="")
        except UnresolvedTarget as why:
            raise Skip(str(why)) from None
        assert isinstance(target, Workload)
        if target.namespace not in request.settings.namespaces:
            raise Skip(
                f"namespace {target.namespace} is not one the policy lets evidence read "
                "(evidence.collectors.kubernetes.namespaces)"
            )
        if self.context.kube is None:
            raise Skip("no Kubernetes client")
        apps = client.AppsV1Api(self.context.kube)
        core = client.CoreV1Api(self.context.kube)
        namespace = target.namespace
        try:
            deployment = await blocking(apps.read_namespaced_deployment, target.name, namespace)
        except client.ApiException as error:
            if error.status != 404:
                raise
            return Found(summary=f"Kubernetes: Deployment {target} not found", data={})
        labels = (deployment.spec.selector.match_labels or {}) if deployment.spec.selector else {}
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        sets = await blocking(
            apps.list_namespaced_replica_set, namespace, label_selector=selector, limit=MAX_LISTED
        )
        owned = [
            rs
            for rs in sets.items
            if any(o.uid == deployment.metadata.uid for o in rs.metadata.owner_references or [])
        ]
        owned.sort(key=lambda rs: int((rs.metadata.annotations or {}).get(REVISION, "0") or 0))
        revisions = [
            {
                "revision": (rs.metadata.annotations or {}).get(REVISION),
                "createdAt": rs.metadata.creation_timestamp.isoformat(timespec="seconds")
                if rs.metadata.creation_timestamp
                else None,
                "images": [c.image for c in rs.spec.template.spec.containers][:4]
                if rs.spec and rs.spec.template and rs.spec.template.spec
                else [],
                "replicas": rs.status.replicas if rs.status else None,
            }
            for rs in reversed(owned[-MAX_REVISIONS:])
        ]
        deployed_at = owned[-1].metadata.creation_timestamp if owned else None
        pods = await blocking(
            core.list_namespaced_pod, namespace, label_selector=selector, limit=MAX_LISTED
        )
        troubled = [t for t in (_pod_trouble(pod) for pod in pods.items) if t is not None]
        mentioned = {target.name, *(rs.metadata.name for rs in owned)}
        mentioned |= {pod.metadata.name for pod in pods.items}
        # The namespace's first MAX_LISTED Events (the API server lists them by
        # name, not time): in a namespace with more, some newer ones are missed.
        events = await blocking(core.list_namespaced_event, namespace, limit=MAX_LISTED)
        ours = [e for e in events.items if e.involved_object.name in mentioned]
        ours.sort(key=_when, reverse=True)
        shown_events = [
            {
                "type": e.type,
                "reason": e.reason,
                "object": f"{e.involved_object.kind}/{e.involved_object.name}",
                "message": line(e.message or "", 200),
                "count": e.count,
            }
            for e in ours[: request.settings.events]
        ]
        status = deployment.status or client.V1DeploymentStatus()
        desired = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        state = rollout(deployment)
        parts = [
            f"rollout {state} ({status.updated_replicas or 0}/{desired} updated, "
            f"{status.available_replicas or 0}/{desired} available)"
        ]
        if deployed_at is not None:
            parts.append(f"revision {revisions[0]['revision']} {ago(deployed_at, request.now)}")
        if troubled:
            reasons = Counter(r.split(" (", 1)[0] for t in troubled for r in t["reasons"])
            said = ", ".join(f"{r} ({n})" for r, n in reasons.most_common(3))
            parts.append(f"{len(troubled)} pods not ready" + (f": {said}" if said else ""))
        if shown_events:
            first = shown_events[0]
            parts.append(f"last event {first['reason']} {first['message']!r}")
        return Found(
            summary="Kubernetes: " + "; ".join(parts),
            data={
                "deployment": str(target),
                "rollout": state,
                "replicas": {
                    "desired": desired,
                    "updated": status.updated_replicas or 0,
                    "ready": status.ready_replicas or 0,
                    "available": status.available_replicas or 0,
                },
                "revisions": revisions,
                "podsNotReady": troubled[:MAX_PODS_SHOWN],
                "events": shown_events,
            },
            deployed_at=deployed_at,
        )
