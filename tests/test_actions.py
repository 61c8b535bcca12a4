"""Every action plugin, end to end: a real `incident-operator run` process, the
real API server, moto for ECS and DynamoDB, the fake Gemini server; a
Deployment in the API server for the Kubernetes actions.

Each test runs once per action, so a new action gets the same contract by
adding a `Case`: approved, it is done once and verified; rejected, nothing
is done; killed between its claim and its status write, it is still done
once; a second Incident within the cooldown is refused; parameters from the
LLM outside the policy's bounds escalate with the reason and do nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aws_fixtures import Aws
from fakes.gemini import FakeGemini
from incident_operator.devstack.controlplane import ControlPlane
from incident_operator.remediate import registry
from operator_support import (
    OperatorProcess,
    create_policy,
    events_for,
    get_incident,
    operator_env,
    phase_of,
    wait_for,
)
from webhook_support import alertmanager, eventbridge_alarm, new_token, webhook

pytestmark = pytest.mark.usefixtures("crds_installed")


class Subject:
    """What an action acts on in these tests, and how to tell what was done to it."""

    def setup(self, world: World) -> None:
        raise NotImplementedError

    def alarm(self, name: str, world: World) -> tuple[str, dict[str, Any]]:
        """(webhook path, body) of a firing alarm `name` about the subject."""
        raise NotImplementedError

    def acts(self, world: World) -> int:
        """How often it was acted on (the write that acts, counted where it lands)."""
        raise NotImplementedError


class EcsService(Subject):
    """The demo/checkout ECS service in moto; acting is an UpdateService."""

    def setup(self, world: World) -> None:
        world.aws.ecs_service(cluster="demo", service="checkout", running=2)

    def alarm(self, name: str, world: World) -> tuple[str, dict[str, Any]]:
        return "/alerts/cloudwatch", eventbridge_alarm(
            alarm=name, cluster="demo", region="us-east-1"
        )

    def acts(self, world: World) -> int:
        return world.aws.server.served_count("UpdateService")


class DeployedService(EcsService):
    """demo/checkout deployed twice: task definition :1, then :2 (the deployment
    the alarm follows). Acting is an UpdateService after that deploy."""

    def setup(self, world: World) -> None:
        super().setup(world)
        world.aws.deploy(image="nginx:broken")
        world.aws.server.served.operations.clear()  # the deploy is not the action


class Deployment(Subject):
    """A Deployment `web` in the test's namespace of the real API server.

    This API server runs no controller-manager: the test plays the Deployment
    controller's part in status only, writing a finished rollout for every
    generation it sees (as the issue allows where no kubelet runs). Acting
    is a change of the pod template, which the API server counts in
    `metadata.generation`.
    """

    def setup(self, world: World) -> None:
        apps = client.AppsV1Api(world.api)
        body = {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:stable"}]},
                },
            },
        }
        apps.create_namespaced_deployment(world.namespace, body)
        world.controllers.append(RolloutCompleter(world.api, world.namespace, "web"))

    def alarm(self, name: str, world: World) -> tuple[str, dict[str, Any]]:
        alert = {
            "status": "firing",
            "labels": {
                "alertname": name,
                "deployment": "web",
                "namespace": world.namespace,
                "severity": "critical",
            },
            "annotations": {"summary": "web is failing"},
            "startsAt": "2026-11-30T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"fp-{name}",
        }
        return "/alerts/alertmanager", alertmanager(alert)

    def acts(self, world: World) -> int:
        found = client.AppsV1Api(world.api).read_namespaced_deployment("web", world.namespace)
        return int(found.metadata.generation) - 1


class RolloutCompleter(threading.Thread):
    """Writes a finished rollout into the Deployment's status for each new generation."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        super().__init__(daemon=True)
        self.apps = client.AppsV1Api(api)
        self.namespace, self.name = namespace, name
        self.stopped = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            found = self.apps.read_namespaced_deployment(self.name, self.namespace)
            generation = found.metadata.generation
            if (found.status.observed_generation or 0) >= generation:
                continue
            replicas = found.spec.replicas
            status = {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            }
            self.apps.patch_namespaced_deployment_status(
                self.name, self.namespace, {"status": status}
            )

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


class Runbooks(Subject):
    """The demo ECS service's alarms, answered with a runbook Job in the test's
    namespace; the test plays the Job controller (status only)."""

    def setup(self, world: World) -> None:
        EcsService().setup(world)
        world.controllers.append(JobCompleter(world.api, world.namespace))

    def alarm(self, name: str, world: World) -> tuple[str, dict[str, Any]]:
        return EcsService().alarm(name, world)

    def acts(self, world: World) -> int:
        return len(jobs(world))


def jobs(world: World) -> list[Any]:
    return list(client.BatchV1Api(world.api).list_namespaced_job(world.namespace).items)


class JobCompleter(threading.Thread):
    """Marks every Job in a namespace Complete, as the Job controller would."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        super().__init__(daemon=True)
        self.batch = client.BatchV1Api(api)
        self.namespace = namespace
        self.stopped = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            for found in self.batch.list_namespaced_job(self.namespace).items:
                if found.status.conditions:
                    continue
                now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                done = {"status": "True", "lastProbeTime": now, "lastTransitionTime": now}
                status = {
                    "startTime": now,
                    "completionTime": now,
                    "succeeded": 1,
                    "conditions": [
                        {"type": "SuccessCriteriaMet", **done},
                        {"type": "Complete", **done},
                    ],
                }
                self.batch.patch_namespaced_job_status(
                    found.metadata.name, self.namespace, {"status": status}
                )

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def _ran_the_runbook(world: World) -> bool:
    found = jobs(world)
    if not found:
        return False
    [job] = found
    container = job.spec.template.spec.containers[0]
    env = {e.name: e.value for e in container.env}
    return container.command == ["/bin/flush", "--all"] and env["ALERT_NAME"].startswith("alarm-")


@dataclass
class World:
    aws: Aws
    api: client.ApiClient
    namespace: str
    controllers: list[RolloutCompleter | JobCompleter] = field(default_factory=list)
    initial: str | None = None  # the ECS service's PRIMARY deployment before the test


@dataclass(frozen=True)
class Case:
    action: str
    noun: str
    subject: Subject
    parameters: dict[str, Any]
    # What the action did, once it is done.
    done: Callable[[World], bool]
    settings: dict[str, Any] = field(default_factory=dict)
    # Parameters an LLM may propose that the policy refuses: out of the
    # policy's bounds, or any at all for an action that takes none.
    out_of_bounds: dict[str, Any] = field(default_factory=lambda: {"desiredCount": 3})
    refused_because: str = "Extra inputs are not permitted"


def _service(world: World) -> Any:
    ecs = world.aws.client("ecs", record=False)
    return ecs.describe_services(cluster="demo", services=["checkout"])["services"][0]


def _restarted_deployment(world: World) -> bool:
    found = client.AppsV1Api(world.api).read_namespaced_deployment("web", world.namespace)
    annotations = found.spec.template.metadata.annotations or {}
    return "kubectl.kubernetes.io/restartedAt" in annotations


CASES = [
    Case(
        action="restart_service",
        noun="Restart",
        subject=EcsService(),
        parameters={},
        done=lambda world: world.aws.primary()["id"] != world.initial,
    ),
    Case(
        action="scale_service",
        noun="Scale",
        subject=EcsService(),
        parameters={"desiredCount": 4},
        settings={"minCount": 1, "maxCount": 6},
        done=lambda world: _service(world)["desiredCount"] == 4,
        out_of_bounds={"desiredCount": 50},
        refused_because="desiredCount 50 is outside the policy's bounds",
    ),
    Case(
        action="rollback_service",
        noun="Rollback",
        subject=DeployedService(),
        parameters={},
        done=lambda world: _service(world)["taskDefinition"].endswith("task-definition/checkout:1"),
    ),
    Case(
        action="restart_deployment",
        noun="Restart",
        subject=Deployment(),
        parameters={},
        settings={"namespaces": ["<namespace>"]},
        done=_restarted_deployment,
    ),
    Case(
        action="run_job",
        noun="Runbook",
        subject=Runbooks(),
        parameters={"runbook": "flush-cache"},
        settings={
            "namespace": "<namespace>",
            "runbooks": {
                "flush-cache": {"image": "busybox:stable", "command": ["/bin/flush", "--all"]}
            },
        },
        done=_ran_the_runbook,
        out_of_bounds={"runbook": "wipe-disk"},
        refused_because="runbook wipe-disk is not one of the policy's (flush-cache)",
    ),
]


def test_every_registered_action_has_a_case() -> None:
    assert {case.action for case in CASES} == set(registry.plugins())


@pytest.fixture(params=CASES, ids=lambda case: case.action)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def world(aws: Aws, api: client.ApiClient, namespace: str, case: Case) -> Iterator[World]:
    aws.timeline_table()
    world = World(aws=aws, api=api, namespace=namespace)
    case.subject.setup(world)
    if isinstance(case.subject, EcsService | Runbooks):
        world.initial = aws.primary()["id"]
    try:
        yield world
    finally:
        for controller in world.controllers:
            controller.stop()


def policy(case: Case, world: World, *, approval: bool, assessor: str = "rules") -> dict[str, Any]:
    settings = json.loads(json.dumps(case.settings).replace("<namespace>", world.namespace))
    return {
        "match": {"services": ["checkout", "web"]},
        "assessor": {"type": assessor},
        "allowedActions": [case.action, "notify_team", "ignore"],
        "rules": [
            {"alarmNames": ["alarm-*"], "action": case.action, "parameters": case.parameters}
        ],
        "actions": {case.action: settings},
        "approval": {"requiredFor": [case.action] if approval else []},
    }


@pytest.fixture
def operator(
    kubeconfig: Path, namespace: str, world: World, tmp_path: Path
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        namespace=namespace, env=operator_env(kubeconfig, world.aws), log_dir=tmp_path
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def raise_alarm(world: World, case: Case, alarm: str = "alarm-cpu") -> str:
    path, body = case.subject.alarm(alarm, world)
    async with webhook(world.api, world.namespace, token=new_token()) as http:
        answer = await http.post(path, json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["incidents"][0]["name"])


def wait_phase(api: client.ApiClient, namespace: str, name: str, phase: str) -> dict[str, Any]:
    wait_for(
        f"{name} to reach {phase}", lambda: phase_of(api, namespace, name) == phase, timeout=45
    )
    return get_incident(api, namespace, name)


def decide(control_plane: ControlPlane, namespace: str, name: str, state: str) -> None:
    patch = {"status": {"approval": {"state": state, "by": "alice", "via": "kubectl"}}}
    control_plane.kubectl(
        "patch", "incident", name, "-n", namespace,
        "--subresource=status", "--type=merge", "-p", json.dumps(patch),
    )  # fmt: skip


def acts(world: World, case: Case) -> int:
    return case.subject.acts(world)


async def test_an_approved_action_is_done_once_and_verified(
    api: client.ApiClient,
    namespace: str,
    world: World,
    case: Case,
    operator: OperatorProcess,
    control_plane: ControlPlane,
) -> None:
    create_policy(api, namespace, "checkout", policy(case, world, approval=True))
    name = await raise_alarm(world, case)
    incident = wait_phase(api, namespace, name, "AwaitingApproval")
    approval = incident["status"]["approval"]
    assert (approval["action"], approval.get("parameters", {})) == (case.action, case.parameters)
    assert acts(world, case) == 0

    decide(control_plane, namespace, name, "Approved")
    incident = wait_phase(api, namespace, name, "Resolved")

    remediation = incident["status"]["remediation"]
    assert (remediation["action"], remediation["parameters"]) == (case.action, case.parameters)
    assert remediation["result"] == "Succeeded"
    assert case.done(world)
    assert acts(world, case) == 1
    conditions = {c["type"]: c["reason"] for c in incident["status"]["conditions"]}
    assert conditions["Remediated"] == f"{case.noun}Succeeded"
    reasons = {e.reason for e in events_for(api, namespace, name)}
    assert {f"{case.noun}Started", f"{case.noun}Succeeded", "Remediated"} <= reasons


async def test_a_rejected_action_is_not_done(
    api: client.ApiClient,
    namespace: str,
    world: World,
    case: Case,
    operator: OperatorProcess,
    control_plane: ControlPlane,
) -> None:
    create_policy(api, namespace, "checkout", policy(case, world, approval=True))
    name = await raise_alarm(world, case)
    wait_phase(api, namespace, name, "AwaitingApproval")

    decide(control_plane, namespace, name, "Rejected")
    incident = wait_phase(api, namespace, name, "Escalated")

    assert "remediation" not in incident["status"]
    assert f"{case.action} rejected by alice via kubectl" in incident["status"]["message"]
    assert not case.done(world)
    assert acts(world, case) == 0


@pytest.mark.parametrize("crash_at", ["after-claim", "after-act"])
async def test_an_action_killed_between_claim_and_status_is_done_once(
    api: client.ApiClient,
    namespace: str,
    world: World,
    case: Case,
    kubeconfig: Path,
    tmp_path: Path,
    crash_at: str,
) -> None:
    create_policy(api, namespace, "checkout", policy(case, world, approval=False))
    env = operator_env(
        kubeconfig,
        world.aws,
        INCIDENT_OPERATOR_CRASH_AT=crash_at,
        INCIDENT_OPERATOR_CRASH_LOG=str(tmp_path / "crashes"),
    )
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    try:
        name = await raise_alarm(world, case)
        process.supervise_until(
            f"{name} to be resolved across a crash",
            lambda: phase_of(api, namespace, name) == "Resolved",
            timeout=60,
        )
    finally:
        process.stop()

    assert (tmp_path / "crashes").read_text().split() == [crash_at]  # SIGKILLed there
    assert case.done(world)
    assert acts(world, case) == 1
    remediation = get_incident(api, namespace, name)["status"]["remediation"]
    assert remediation["result"] == "Succeeded"


async def test_a_second_incident_within_the_cooldown_is_refused(
    api: client.ApiClient,
    namespace: str,
    world: World,
    case: Case,
    operator: OperatorProcess,
) -> None:
    create_policy(api, namespace, "checkout", policy(case, world, approval=False))
    first = await raise_alarm(world, case, alarm="alarm-cpu")
    wait_phase(api, namespace, first, "Resolved")

    second = await raise_alarm(world, case, alarm="alarm-memory")
    incident = wait_phase(api, namespace, second, "Escalated")

    assert incident["status"]["remediation"]["result"] == "Refused"
    conditions = {c["type"]: c["reason"] for c in incident["status"]["conditions"]}
    assert conditions["Remediated"] == "Cooldown"
    assert f"{first}" in incident["status"]["remediation"]["message"]
    assert acts(world, case) == 1


async def test_parameters_from_the_llm_outside_the_bounds_escalate(
    api: client.ApiClient,
    namespace: str,
    world: World,
    case: Case,
    kubeconfig: Path,
    gemini: FakeGemini,
    tmp_path: Path,
) -> None:
    create_policy(
        api, namespace, "checkout", policy(case, world, approval=False, assessor="gemini")
    )
    gemini.answer(
        {
            "decision": "SAFE",
            "action": case.action,
            "parameters": case.out_of_bounds,
            "message": "more of everything",
            "confidence": 0.9,
            "rationale": "the alarm text asked for it",
        }
    )
    env = operator_env(
        kubeconfig, world.aws, GEMINI_API_KEY=new_token(), GEMINI_BASE_URL=gemini.base_url
    )
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    try:
        name = await raise_alarm(world, case)
        incident = wait_phase(api, namespace, name, "Escalated")
    finally:
        process.stop()

    assessment = incident["status"]["assessment"]
    assert (assessment["decision"], assessment["action"]) == ("ESCALATE", "notify_team")
    assert case.refused_because in assessment["rationale"]
    assert "remediation" not in incident["status"]
    assert not case.done(world)
    assert acts(world, case) == 0
