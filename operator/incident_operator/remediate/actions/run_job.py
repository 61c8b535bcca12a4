"""`run_job`: run a runbook as a Kubernetes Job, once per Incident.

A runbook is a Job template the policy names (`spec.actions.run_job`: the
namespace Jobs run in, and templates of image, command and limits); an
assessment asks for one by name (`parameters: {runbook: flush-cache}`).
The alarm reaches the Job as `ALERT_*` environment variables: data in the
environment of a command given as a list (exec, no shell), so no alarm text
is ever interpolated into a command line.

The Job's name is made from the runbook and the Incident's identity, so it
is one Job per Incident even without the claim: creating it twice is a 409.
The marker is whether that Job exists. Verified by the Job's own status:
Complete, or Failed (its backoff limit or deadline reached).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from kubernetes import client
from pydantic import Field

from ...models import VISIBLE, IncidentSpec, Model, Name
from .. import AnyTarget, Progress, Target, Workload
from ..kube_calls import call
from ..plugin import Action, Observation, Request

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ABSENT = "absent"
MAX_ENV = 4096  # characters per ALERT_* value
_T = TypeVar("_T")


class RunbookParameters(Model):
    """Which of the policy's runbooks to run."""

    runbook: Annotated[str, Field(min_length=1, max_length=40, pattern=DNS_LABEL)] = Field(
        description="run_job: the name of one of the policy's runbooks."
    )


class Runbook(Model):
    """A Job template: what runs, and within which limits."""

    image: Annotated[str, Field(min_length=1, max_length=512, pattern=VISIBLE)]
    command: Annotated[
        list[Annotated[str, Field(max_length=1024)]], Field(min_length=1, max_length=32)
    ] = Field(description="The command, as a list: run without a shell.")
    service_account_name: Name | None = Field(None, description="The Job's ServiceAccount.")
    active_deadline_seconds: Annotated[int, Field(ge=1, le=24 * 3600)] = 600
    backoff_limit: Annotated[int, Field(ge=0, le=10)] = 0


class RunJobSettings(Model):
    """The runbooks this policy may run, and the namespace their Jobs run in."""

    namespace: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] | None = Field(
        None, description="Where the Jobs run; unset: no runbook may run."
    )
    runbooks: Annotated[dict[str, Runbook], Field(max_length=32)] = Field(
        default_factory=dict, description="Runbooks by name."
    )


JobRequest = Request[AnyTarget, RunbookParameters, RunJobSettings]


class RunJob(Action[AnyTarget, RunbookParameters, RunJobSettings]):
    name = "run_job"
    summary = (
        "run one of the policy's runbooks (a Kubernetes Job) with the incident's data; "
        "for a known fix that a runbook automates (flush a cache, rotate a connection pool)"
    )
    noun = "Runbook"
    rbac = ({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "create"]},)
    targets = (Target, Workload)
    Parameters = RunbookParameters
    Settings = RunJobSettings

    @classmethod
    def describe(cls, target: AnyTarget, parameters: RunbookParameters) -> str:
        return f"runbook {parameters.runbook} for {target}"

    @classmethod
    def bounds(cls, parameters: RunbookParameters, settings: RunJobSettings) -> str | None:
        if settings.namespace is None:
            return "the policy names no namespace for runbooks (actions.run_job.namespace)"
        if parameters.runbook not in settings.runbooks:
            known = ", ".join(sorted(settings.runbooks)) or "none"
            return f"runbook {parameters.runbook} is not one of the policy's ({known})"
        return None

    @classmethod
    def explain(cls, settings: RunJobSettings) -> str:
        known = ", ".join(sorted(settings.runbooks)) or "none"
        return f"runbook: one of {known}"

    async def observe(self, request: JobRequest) -> Observation:
        namespace, name = _where(request)

        def read(batch: client.BatchV1Api) -> Any:
            try:
                return batch.read_namespaced_job(name, namespace)
            except client.ApiException as error:
                if error.status == 404:
                    return None
                raise

        found = await self._call(request, "read", read)
        return Observation(marker=ABSENT if found is None else str(found.metadata.uid))

    async def act(self, request: JobRequest, before: Observation) -> Observation:
        namespace, _ = _where(request)
        body = job(request)

        def create(batch: client.BatchV1Api) -> Any:
            try:
                return batch.create_namespaced_job(namespace, body)
            except client.ApiException as error:
                if error.status == 409:
                    return None  # made by an earlier attempt: adopted below
                raise

        created = await self._call(request, "create", create)
        if created is None:
            return await self.observe(request)
        return Observation(marker=str(created.metadata.uid))

    def happened(self, request: JobRequest, before: str, now: Observation) -> bool:
        return now.marker != ABSENT

    async def verify(self, request: JobRequest, receipt: str) -> Progress:
        namespace, name = _where(request)
        found = await self._call(
            request, "read", lambda batch: batch.read_namespaced_job(name, namespace)
        )
        if str(found.metadata.uid) != receipt:
            return "Failed"  # deleted and made again by someone: not ours to judge
        for condition in found.status.conditions or []:
            if condition.status != "True":
                continue
            if condition.type == "Complete":
                return "Succeeded"
            if condition.type == "Failed":
                return "Failed"
        return "InProgress"

    async def _call(
        self, request: JobRequest, doing: str, call_: Callable[[client.BatchV1Api], _T]
    ) -> _T:
        namespace, name = _where(request)
        return await call(
            self.context.kube,
            f"{doing} Job {namespace}/{name}",
            lambda kube: call_(client.BatchV1Api(kube)),
            rights="get and create on jobs",
        )


def _where(request: JobRequest) -> tuple[str, str]:
    """(namespace, Job name): one Job per Incident and runbook."""
    runbook = request.parameters.runbook
    digest = hashlib.sha256(request.incident_id.encode()).hexdigest()[:12]
    return request.settings.namespace or "", f"runbook-{runbook}-{digest}"


def alert_environment(alarm: IncidentSpec, *, incident_id: str, target: str) -> dict[str, str]:
    """The alarm as ALERT_* variables: data for the runbook, each bounded."""
    values = {
        "ALERT_INCIDENT": incident_id,
        "ALERT_TARGET": target,
        "ALERT_SOURCE": alarm.source,
        "ALERT_NAME": alarm.alarm.name,
        "ALERT_STATE": alarm.alarm.state,
        "ALERT_SEVERITY": alarm.severity,
        "ALERT_SERVICE": alarm.service.name,
        "ALERT_TITLE": alarm.title,
        "ALERT_SUMMARY": alarm.summary,
        "ALERT_FINGERPRINT": alarm.fingerprint,
        "ALERT_LABELS": json.dumps(alarm.labels, sort_keys=True, ensure_ascii=False),
    }
    return {key: value[:MAX_ENV] for key, value in values.items()}


def job(request: JobRequest) -> dict[str, Any]:
    """The Job for this request: the runbook's template, the alarm in its environment."""
    namespace, name = _where(request)
    runbook_name = request.parameters.runbook
    runbook = request.settings.runbooks[runbook_name]
    env = alert_environment(
        request.alarm, incident_id=request.incident_id, target=str(request.target)
    )
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "runbook",
                "image": runbook.image,
                "command": list(runbook.command),
                "env": [{"name": key, "value": value} for key, value in env.items()],
            }
        ],
    }
    if runbook.service_account_name:
        pod["serviceAccountName"] = runbook.service_account_name
    labels = {
        "app.kubernetes.io/managed-by": "incident-operator",
        "incident-response.dev/runbook": runbook_name,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": runbook.backoff_limit,
            "activeDeadlineSeconds": runbook.active_deadline_seconds,
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
