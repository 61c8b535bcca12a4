"""ECS service deployments and service revisions in front of moto.

What moto 5.2.5 lacks
---------------------
Real ECS keeps a history per service. Every deployment (CreateService, and
each UpdateService that starts one: another task definition, or
forceNewDeployment) is a *service deployment* whose target is a new *service
revision*, the configuration it deploys (task definition, launch type,
images...). `ListServiceDeployments`, `DescribeServiceDeployments` and
`DescribeServiceRevisions` read that history. moto serves none of the three
(it raises NotImplementedError: a 500 to the client), keeps only a service's
current deployment, and on `UpdateService(taskDefinition=...)` neither starts
a deployment nor updates the one it has: the PRIMARY deployment keeps its id
and the old task definition, and the service's `taskDefinition` is stored as
the caller spelled it (`checkout:2`) where ECS answers with the ARN.

What this serves
----------------
`EcsDeployments`, WSGI middleware in front of moto's app:

- After moto has carried out CreateService or UpdateService, it records a
  service deployment and its revision whenever the service's PRIMARY
  deployment is a new one. An UpdateService naming another task definition
  is first completed the way ECS does it: the service's `taskDefinition`
  becomes that definition's ARN, and the PRIMARY deployment gets a new id,
  new timestamps and that task definition, the same in-place change moto
  makes for forceNewDeployment (its rolloutState stays: moto never moves a
  rollout on; see remediate/ecs.py). The answer to the call says the same.
- It answers the three operations in the JSON shapes of botocore's ECS
  service model, from that history and moto's own state: the service's
  current deployment has the status its moto rolloutState says (COMPLETED:
  SUCCESSFUL, FAILED: ROLLBACK_FAILED, else IN_PROGRESS); a superseded one
  keeps SUCCESSFUL, or else becomes STOPPED. ListServiceDeployments takes
  `status` and `createdAt` filters and pages with `maxResults` (1-100,
  default 20) and `nextToken`, newest first; the two Describe calls take at
  most 20 ARNs and report unknown ones as failures (reason MISSING).
- `POST /moto-api/reset` forgets the history with moto's state.

Not modelled: lifecycle hooks, alarms and circuit breakers of a deployment
(absent from the answers), and deployments moto itself never makes (task
sets, CODE_DEPLOY and EXTERNAL controllers).
"""

from __future__ import annotations

import io
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from moto.ecs.models import ecs_backends

_PREFIX = "AmazonEC2ContainerServiceV20141113."
_SERVED = frozenset(
    {"ListServiceDeployments", "DescribeServiceDeployments", "DescribeServiceRevisions"}
)
_RECORDED = frozenset({"CreateService", "UpdateService"})
_REGION = re.compile(r"Credential=[^/]+/\d+/([^/]+)/ecs/")
_STATUS = {"COMPLETED": "SUCCESSFUL", "FAILED": "ROLLBACK_FAILED"}
MAX_ARNS = 20


class EcsError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Revision:
    arn: str
    service_arn: str
    cluster_arn: str
    task_definition: str
    launch_type: str | None
    images: list[dict[str, str]]
    created_at: datetime

    def shape(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "serviceRevisionArn": self.arn,
            "serviceArn": self.service_arn,
            "clusterArn": self.cluster_arn,
            "taskDefinition": self.task_definition,
            "containerImages": self.images,
            "createdAt": self.created_at.timestamp(),
        }
        if self.launch_type:
            found["launchType"] = self.launch_type
        return found


@dataclass
class ServiceDeployment:
    arn: str
    ecs_id: str  # the id of moto's deployment ("ecs-svc/..."), to follow its rolloutState
    service_arn: str
    cluster_arn: str
    target: Revision
    source: Revision | None
    desired_count: int
    created_at: datetime
    rollout_state: str  # moto's, as last seen while this was the current deployment
    final: str | None = None  # the status once superseded

    def status(self, current: dict[str, Any] | None) -> str:
        if self.final is not None:
            return self.final
        if current is not None:
            self.rollout_state = str(current.get("rolloutState", "IN_PROGRESS"))
        return _STATUS.get(self.rollout_state, "IN_PROGRESS")

    def supersede(self) -> None:
        status = self.status(None)
        self.final = status if status != "IN_PROGRESS" else "STOPPED"

    def brief(self, current: dict[str, Any] | None) -> dict[str, Any]:
        status = self.status(current)
        found: dict[str, Any] = {
            "serviceDeploymentArn": self.arn,
            "serviceArn": self.service_arn,
            "clusterArn": self.cluster_arn,
            "createdAt": self.created_at.timestamp(),
            "startedAt": self.created_at.timestamp(),
            "targetServiceRevisionArn": self.target.arn,
            "status": status,
        }
        if status in ("SUCCESSFUL", "STOPPED", "ROLLBACK_FAILED"):
            # moto's rollouts end when they start (or never): see the module's docstring.
            found["finishedAt"] = self.created_at.timestamp()
        if status == "STOPPED":
            found["statusReason"] = "Stopped by a newer deployment."
        return found

    def shape(self, current: dict[str, Any] | None) -> dict[str, Any]:
        found = self.brief(current)
        found.pop("targetServiceRevisionArn")
        found["updatedAt"] = self.created_at.timestamp()
        running = (current or {}).get("runningCount", 0) if self.final is None else 0
        pending = (current or {}).get("pendingCount", 0) if self.final is None else 0
        found["targetServiceRevision"] = {
            "arn": self.target.arn,
            "requestedTaskCount": self.desired_count,
            "runningTaskCount": running,
            "pendingTaskCount": pending,
        }
        found["sourceServiceRevisions"] = (
            [
                {
                    "arn": self.source.arn,
                    "requestedTaskCount": 0,
                    "runningTaskCount": 0,
                    "pendingTaskCount": 0,
                }
            ]
            if self.source is not None
            else []
        )
        return found


@dataclass
class History:
    """What ECS remembers of each service, keyed by service ARN."""

    deployments: dict[str, list[ServiceDeployment]] = field(default_factory=dict)
    by_arn: dict[str, ServiceDeployment] = field(default_factory=dict)
    revisions: dict[str, Revision] = field(default_factory=dict)

    def clear(self) -> None:
        self.deployments.clear()
        self.by_arn.clear()
        self.revisions.clear()


class EcsDeployments:
    """WSGI middleware: moto's ECS with service deployments and revisions (see the module)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self.history = History()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/moto-api/reset":
            self.history.clear()
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        operation = target.removeprefix(_PREFIX) if target.startswith(_PREFIX) else ""
        if operation not in _SERVED | _RECORDED:
            passed: Iterable[bytes] = self._app(environ, start_response)
            return passed
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if operation in _SERVED:
            return self._serve(operation, body, environ, start_response)
        return self._record(operation, body, environ, start_response)

    # --- the three operations moto lacks ----------------------------------------

    def _serve(
        self, operation: str, body: bytes, environ: dict[str, Any], start_response: Any
    ) -> Iterable[bytes]:
        try:
            request = json.loads(body or b"{}")
            region = _region(environ)
            handler: Callable[[dict[str, Any], str], dict[str, Any]] = {
                "ListServiceDeployments": self._list,
                "DescribeServiceDeployments": self._describe_deployments,
                "DescribeServiceRevisions": self._describe_revisions,
            }[operation]
            return _answer(start_response, 200, handler(request, region))
        except EcsError as error:
            return _answer(start_response, 400, {"__type": error.code, "message": str(error)})
        except (ValueError, TypeError, KeyError) as error:
            return _answer(
                start_response, 400, {"__type": "ClientException", "message": str(error)}
            )

    def _list(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        cluster, service = _names(request.get("cluster") or "default", request["service"])
        found = _service(region, cluster, service)
        history = self.history.deployments.get(found.arn, [])
        wanted = set(request.get("status") or ())
        window = request.get("createdAt") or {}
        before, after = window.get("before"), window.get("after")
        size = int(request.get("maxResults") or 20)
        if not 1 <= size <= 100:
            raise EcsError("InvalidParameterException", "maxResults must be between 1 and 100.")
        start = int(request.get("nextToken") or 0)
        matching = []
        for deployment in reversed(history):  # newest first
            brief = deployment.brief(_current_of(deployment))
            created = brief["createdAt"]
            if wanted and brief["status"] not in wanted:
                continue
            if (before is not None and created >= before) or (
                after is not None and created <= after
            ):
                continue
            matching.append(brief)
        page = matching[start : start + size]
        answer: dict[str, Any] = {"serviceDeployments": page}
        if start + size < len(matching):
            answer["nextToken"] = str(start + size)
        return answer

    def _describe_deployments(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        def shape(arn: str) -> dict[str, Any] | None:
            found = self.history.by_arn.get(arn)
            return found.shape(_current_of(found)) if found is not None else None

        return _described(request, "serviceDeploymentArns", "serviceDeployments", shape)

    def _describe_revisions(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        def shape(arn: str) -> dict[str, Any] | None:
            found = self.history.revisions.get(arn)
            return found.shape() if found is not None else None

        return _described(request, "serviceRevisionArns", "serviceRevisions", shape)

    # --- recording what CreateService and UpdateService did ---------------------

    def _record(
        self, operation: str, body: bytes, environ: dict[str, Any], start_response: Any
    ) -> Iterable[bytes]:
        answered: list[Any] = []

        def keep(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            answered.append((status, headers))
            return lambda data: None

        chunks = b"".join(self._app(environ, keep))
        status, headers = answered[0]
        if status.startswith("200"):
            response = json.loads(chunks)
            asked = json.loads(body or b"{}").get("taskDefinition")
            if operation == "UpdateService" and asked:
                self._deploy(response["service"], asked)
            self._remember(response["service"])
            chunks = json.dumps(response).encode()
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(chunks))))
        start_response(status, headers)
        return [chunks]

    def _deploy(self, answer: dict[str, Any], asked: str) -> None:
        """UpdateService to another task definition starts a deployment, as in ECS."""
        service = _by_arn(answer["serviceArn"])
        backend = ecs_backends[_account(service.arn)][service.region_name]
        definition = backend.describe_task_definition(asked).arn
        service.task_definition = definition
        answer["taskDefinition"] = definition
        deployment = _primary(service)
        if deployment is None or deployment.get("taskDefinition") == definition:
            return
        now, old_id = datetime.now(UTC), deployment["id"]
        deployment["id"] = f"ecs-svc/{secrets.randbelow(10**19)}"
        deployment["taskDefinition"] = definition
        deployment["createdAt"] = deployment["updatedAt"] = now
        deployment["rolloutStateReason"] = str(deployment.get("rolloutStateReason", "")).replace(
            old_id, deployment["id"]
        )
        for shown in answer.get("deployments", []):
            if shown.get("status") == "PRIMARY":
                shown.update(
                    id=deployment["id"],
                    rolloutStateReason=deployment["rolloutStateReason"],
                    taskDefinition=definition,
                    createdAt=now.timestamp(),
                    updatedAt=now.timestamp(),
                )

    def _remember(self, answer: dict[str, Any]) -> None:
        service = _by_arn(answer["serviceArn"])
        current = _primary(service)
        history = self.history.deployments.setdefault(service.arn, [])
        if current is None or (history and history[-1].ecs_id == current["id"]):
            return
        source = history[-1] if history else None
        if source is not None:
            source.supersede()
        now = datetime.now(UTC)
        cluster, name = service.cluster_name, service.name
        prefix = service.arn.split(":service/")[0]
        revision = Revision(
            arn=f"{prefix}:service-revision/{cluster}/{name}/{uuid.uuid4().int % 10**19}",
            service_arn=service.arn,
            cluster_arn=service.cluster_arn,
            task_definition=str(current.get("taskDefinition") or service.task_definition),
            launch_type=service.launch_type,
            images=_images(service),
            created_at=now,
        )
        deployment = ServiceDeployment(
            arn=f"{prefix}:service-deployment/{cluster}/{name}/{secrets.token_urlsafe(16)}",
            ecs_id=current["id"],
            service_arn=service.arn,
            cluster_arn=service.cluster_arn,
            target=revision,
            source=source.target if source is not None else None,
            desired_count=service.desired_count,
            created_at=now,
            rollout_state=str(current.get("rolloutState", "IN_PROGRESS")),
        )
        self.history.revisions[revision.arn] = revision
        self.history.by_arn[deployment.arn] = deployment
        history.append(deployment)


# --- moto's state --------------------------------------------------------------


def _account(arn: str) -> str:
    return arn.split(":")[4]


def _by_arn(service_arn: str) -> Any:
    region, account = service_arn.split(":")[3], _account(service_arn)
    backend = ecs_backends[account][region]
    for service in backend.services.values():
        if service.arn == service_arn:
            return service
    raise KeyError(service_arn)


def _service(region: str, cluster: str, name: str) -> Any:
    for account in ecs_backends:
        backend = ecs_backends[account][region]
        if cluster not in backend.clusters:
            continue
        found = backend.services.get(f"{cluster}:{name}")
        if found is not None and found.status == "ACTIVE":
            return found
        raise EcsError("ServiceNotFoundException", "Service not found.")
    raise EcsError("ClusterNotFoundException", "Cluster not found.")


def _primary(service: Any) -> dict[str, Any] | None:
    for deployment in service.deployments:
        if deployment.get("status") == "PRIMARY":
            return deployment  # type: ignore[no-any-return]
    return None


def _current_of(deployment: ServiceDeployment) -> dict[str, Any] | None:
    try:
        current = _primary(_by_arn(deployment.service_arn))
    except KeyError:
        return None
    return current if current is not None and current["id"] == deployment.ecs_id else None


def _images(service: Any) -> list[dict[str, str]]:
    if not service.task_definition:
        return []
    backend = ecs_backends[_account(service.arn)][service.region_name]
    definition = backend.describe_task_definition(service.task_definition)
    return [
        {"containerName": c.get("name", ""), "image": c.get("image", "")}
        for c in definition.container_definitions
    ]


# --- the protocol -----------------------------------------------------------------


def _region(environ: dict[str, Any]) -> str:
    match = _REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match is None:
        raise EcsError("AccessDeniedException", "The request is not signed for ecs.")
    return match.group(1)


def _names(cluster: str, service: str) -> tuple[str, str]:
    """(cluster, service) names, from names or ARNs."""
    if service.startswith("arn:"):
        path = service.split(":service/", 1)[-1].split("/")
        if len(path) == 2:
            cluster = path[0]
        service = path[-1]
    return cluster.rsplit("/", 1)[-1], service


def _described(
    request: dict[str, Any],
    key: str,
    answer_key: str,
    shape: Callable[[str], dict[str, Any] | None],
) -> dict[str, Any]:
    """A Describe* answer: the shapes of the ARNs found, the others as failures."""
    arns = request[key]
    if not isinstance(arns, list) or not arns or len(arns) > MAX_ARNS:
        raise EcsError("InvalidParameterException", f"{key} must name 1 to {MAX_ARNS} ARNs.")
    found, failures = [], []
    for arn in map(str, arns):
        shaped = shape(arn)
        if shaped is None:
            failures.append({"arn": arn, "reason": "MISSING"})
        else:
            found.append(shaped)
    return {answer_key: found, "failures": failures}


def _answer(start_response: Any, status: int, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        "200 OK" if status == 200 else "400 Bad Request",
        [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Content-Length", str(len(data))),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ],
    )
    return [data]
