"""Every action plugin, end to end: a real `incident-operator run` process, the
real API server, moto for ECS and DynamoDB, the fake Gemini server.

Each test runs once per action, so a new action gets the same contract by
adding a `Case`: approved, it is done once and verified; rejected, nothing
is done; killed between its claim and its status write, it is still done
once; a second Incident within the cooldown is refused; parameters from the
LLM outside the policy's bounds escalate with the reason and do nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
from webhook_support import eventbridge_alarm, new_token, webhook

pytestmark = pytest.mark.usefixtures("crds_installed")


@dataclass(frozen=True)
class Case:
    action: str
    noun: str
    parameters: dict[str, Any]
    # What the action did to the demo/checkout service, as moto tells it.
    done: Callable[[Aws], bool]
    settings: dict[str, Any] = field(default_factory=dict)
    # Parameters an LLM may propose that the policy's bounds refuse (None:
    # the action has none, so any parameter makes the answer unusable).
    out_of_bounds: dict[str, Any] = field(default_factory=lambda: {"desiredCount": 3})
    refused_because: str = "parameters of restart_service: desiredCount: Extra inputs"


def _service(aws: Aws) -> Any:
    ecs = aws.client("ecs", record=False)
    return ecs.describe_services(cluster="demo", services=["checkout"])["services"][0]


class Restarted:
    """The demo service got a new deployment since `remember`."""

    def __init__(self) -> None:
        self.before: str | None = None

    def remember(self, aws: Aws) -> None:
        self.before = aws.primary()["id"]

    def __call__(self, aws: Aws) -> bool:
        return aws.primary()["id"] != self.before


CASES = [
    Case(
        action="restart_service",
        noun="Restart",
        parameters={},
        done=Restarted(),
    ),
    Case(
        action="scale_service",
        noun="Scale",
        parameters={"desiredCount": 4},
        settings={"minCount": 1, "maxCount": 6},
        done=lambda aws: _service(aws)["desiredCount"] == 4,
        out_of_bounds={"desiredCount": 50},
        refused_because="desiredCount 50 is outside the policy's bounds",
    ),
]


def test_every_registered_action_has_a_case() -> None:
    assert {case.action for case in CASES} == set(registry.plugins())


@pytest.fixture(params=CASES, ids=lambda case: case.action)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def world(aws: Aws, case: Case) -> Aws:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    if isinstance(case.done, Restarted):
        case.done.remember(aws)
    return aws


def policy(case: Case, *, approval: bool, assessor: str = "rules") -> dict[str, Any]:
    return {
        "match": {"services": ["checkout"]},
        "assessor": {"type": assessor},
        "allowedActions": [case.action, "notify_team", "ignore"],
        "rules": [
            {"alarmNames": ["checkout-*"], "action": case.action, "parameters": case.parameters}
        ],
        "actions": {case.action: case.settings},
        "approval": {"requiredFor": [case.action] if approval else []},
    }


@pytest.fixture
def operator(
    kubeconfig: Path, namespace: str, world: Aws, tmp_path: Path
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        namespace=namespace, env=operator_env(kubeconfig, world), log_dir=tmp_path
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def raise_alarm(api: client.ApiClient, namespace: str, alarm: str = "checkout-cpu") -> str:
    body = eventbridge_alarm(alarm=alarm, cluster="demo", region="us-east-1")
    async with webhook(api, namespace, token=new_token()) as http:
        answer = await http.post("/alerts/cloudwatch", json=body)
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


def updates(world: Aws) -> int:
    return world.server.served_count("UpdateService")


async def test_an_approved_action_is_done_once_and_verified(
    api: client.ApiClient,
    namespace: str,
    world: Aws,
    case: Case,
    operator: OperatorProcess,
    control_plane: ControlPlane,
) -> None:
    create_policy(api, namespace, "checkout", policy(case, approval=True))
    name = await raise_alarm(api, namespace)
    incident = wait_phase(api, namespace, name, "AwaitingApproval")
    approval = incident["status"]["approval"]
    assert (approval["action"], approval.get("parameters", {})) == (case.action, case.parameters)
    assert updates(world) == 0

    decide(control_plane, namespace, name, "Approved")
    incident = wait_phase(api, namespace, name, "Resolved")

    remediation = incident["status"]["remediation"]
    assert (remediation["action"], remediation["parameters"]) == (case.action, case.parameters)
    assert remediation["result"] == "Succeeded"
    assert case.done(world)
    assert updates(world) == 1
    conditions = {c["type"]: c["reason"] for c in incident["status"]["conditions"]}
    assert conditions["Remediated"] == f"{case.noun}Succeeded"
    reasons = {e.reason for e in events_for(api, namespace, name)}
    assert {f"{case.noun}Started", f"{case.noun}Succeeded", "Remediated"} <= reasons


async def test_a_rejected_action_is_not_done(
    api: client.ApiClient,
    namespace: str,
    world: Aws,
    case: Case,
    operator: OperatorProcess,
    control_plane: ControlPlane,
) -> None:
    create_policy(api, namespace, "checkout", policy(case, approval=True))
    name = await raise_alarm(api, namespace)
    wait_phase(api, namespace, name, "AwaitingApproval")

    decide(control_plane, namespace, name, "Rejected")
    incident = wait_phase(api, namespace, name, "Escalated")

    assert "remediation" not in incident["status"]
    assert f"{case.action} rejected by alice via kubectl" in incident["status"]["message"]
    assert not case.done(world)
    assert updates(world) == 0


@pytest.mark.parametrize("crash_at", ["after-claim", "after-act"])
async def test_an_action_killed_between_claim_and_status_is_done_once(
    api: client.ApiClient,
    namespace: str,
    world: Aws,
    case: Case,
    kubeconfig: Path,
    tmp_path: Path,
    crash_at: str,
) -> None:
    create_policy(api, namespace, "checkout", policy(case, approval=False))
    env = operator_env(
        kubeconfig,
        world,
        INCIDENT_OPERATOR_CRASH_AT=crash_at,
        INCIDENT_OPERATOR_CRASH_LOG=str(tmp_path / "crashes"),
    )
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    try:
        name = await raise_alarm(api, namespace)
        process.supervise_until(
            f"{name} to be resolved across a crash",
            lambda: phase_of(api, namespace, name) == "Resolved",
            timeout=60,
        )
    finally:
        process.stop()

    assert (tmp_path / "crashes").read_text().split() == [crash_at]  # SIGKILLed there
    assert case.done(world)
    assert updates(world) == 1
    remediation = get_incident(api, namespace, name)["status"]["remediation"]
    assert remediation["result"] == "Succeeded"


async def test_a_second_incident_within_the_cooldown_is_refused(
    api: client.ApiClient,
    namespace: str,
    world: Aws,
    case: Case,
    operator: OperatorProcess,
) -> None:
    create_policy(api, namespace, "checkout", policy(case, approval=False))
    first = await raise_alarm(api, namespace, alarm="checkout-cpu")
    wait_phase(api, namespace, first, "Resolved")

    second = await raise_alarm(api, namespace, alarm="checkout-memory")
    incident = wait_phase(api, namespace, second, "Escalated")

    assert incident["status"]["remediation"]["result"] == "Refused"
    conditions = {c["type"]: c["reason"] for c in incident["status"]["conditions"]}
    assert conditions["Remediated"] == "Cooldown"
    assert f"{first}" in incident["status"]["remediation"]["message"]
    assert updates(world) == 1


async def test_parameters_from_the_llm_outside_the_bounds_escalate(
    api: client.ApiClient,
    namespace: str,
    world: Aws,
    case: Case,
    kubeconfig: Path,
    gemini: FakeGemini,
    tmp_path: Path,
) -> None:
    create_policy(api, namespace, "checkout", policy(case, approval=False, assessor="gemini"))
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
        kubeconfig, world, GEMINI_API_KEY=new_token(), GEMINI_BASE_URL=gemini.base_url
    )
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    try:
        name = await raise_alarm(api, namespace)
        incident = wait_phase(api, namespace, name, "Escalated")
    finally:
        process.stop()

    assessment = incident["status"]["assessment"]
    assert (assessment["decision"], assessment["action"]) == ("ESCALATE", "notify_team")
    assert case.refused_because in assessment["rationale"]
    assert "remediation" not in incident["status"]
    assert not case.done(world)
    assert updates(world) == 0
