"""The attacks of issue 12 that went through the operator, end to end.

Each test replays one attempt against the real parts (the local API server,
a real `incident-operator run` process, moto for ECS) and checks that what
the product promises holds: remediation only as the policy allows and only
what a human approved, every well-formed alarm an Incident, names that read
as what they are. The webhook's own doors (bounded JSON, SNS, Slack URLs,
docs) are tested in the webhook's test files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aws_fixtures import REGION, Aws
from fakes.gemini import FakeGemini
from incident_operator.models import GROUP, VERSION
from operator_support import (
    OperatorProcess,
    create_policy,
    get_incident,
    operator_env,
    wait_for,
)
from webhook_support import eventbridge_alarm, generic_alert, new_token, webhook

pytestmark = pytest.mark.usefixtures("crds_installed")

PAYMENTS_ARN = f"arn:aws:ecs:{REGION}:123456789012:service/demo/payments"
# A human handles payments; nothing is ever restarted automatically.
PAYMENTS_BY_HAND = {
    "match": {"services": ["payments"]},
    "rules": [{"action": "notify_team"}],
    "allowedActions": ["notify_team"],
}


@pytest.fixture
def world(aws: Aws) -> Aws:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="payments", running=2)
    return aws


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


async def post(
    api: client.ApiClient, namespace: str, path: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with webhook(api, namespace, token=new_token()) as http:
        answer = await http.post(path, json=body)
    return answer.status_code, answer.json()


def settled(api: client.ApiClient, namespace: str, name: str, phase: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        incident = get_incident(api, namespace, name)
        return incident if incident.get("status", {}).get("phase") == phase else None

    return wait_for(f"{name} to be {phase}", reached, timeout=30)


async def test_an_arn_alias_of_a_service_gets_its_policy_and_is_not_restarted(
    api: client.ApiClient, namespace: str, world: Aws, operator: OperatorProcess
) -> None:
    # The attack: the ARN matched no policy, the built-in default asked for
    # approval of a restart, and ECS accepted the ARN as the service.
    create_policy(api, namespace, "payments-by-hand", PAYMENTS_BY_HAND)
    before = world.primary(service="payments")["id"]
    alert = generic_alert(
        PAYMENTS_ARN, incident_id="alias-attack", severity="critical", alarm_name="payments-5xx"
    )
    alert["detail"]["cluster_name"] = "demo"
    del alert["detail"]["Trigger"]

    status, answer = await post(api, namespace, "/alert", alert)
    assert status == 200, answer
    incident = settled(api, namespace, answer["incidents"][0]["name"], "Escalated")

    assessment = incident["status"]["assessment"]
    assert assessment["policy"] == "payments-by-hand"
    assert assessment["action"] == "notify_team"
    assert "approval" not in incident["status"] and "remediation" not in incident["status"]
    assert world.primary(service="payments")["id"] == before


async def test_a_cloudwatch_alarm_without_ecs_dimensions_is_escalated_not_lost(
    api: client.ApiClient, namespace: str, world: Aws, operator: OperatorProcess
) -> None:
    # An RDS alarm: no ClusterName/ServiceName. It used to get a 422, which
    # EventBridge does not retry.
    alarm = eventbridge_alarm("orders-db-cpu-sev2", region=REGION)
    metric = alarm["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]
    metric["namespace"] = "AWS/RDS"
    metric["dimensions"] = {"DBInstanceIdentifier": "orders-db"}

    status, answer = await post(api, namespace, "/alerts/cloudwatch", alarm)
    assert status == 200, answer
    name = answer["incidents"][0]["name"]
    incident = settled(api, namespace, name, "Escalated")

    service = incident["spec"]["service"]
    assert (service["name"], service["platform"]) == ("AWS/RDS", "none")
    assert incident["spec"]["alarm"]["dimensions"] == {"DBInstanceIdentifier": "orders-db"}
    # high severity: the built-in rules would restart; there is nothing to restart.
    assert incident["status"]["assessment"]["action"] == "restart_service"
    assert incident["status"]["lastTransition"]["records"][-1]["reason"] == "NoTarget"
    assert "remediation" not in incident["status"]


async def test_a_policy_with_rules_and_no_assessor_is_decided_by_its_rules(
    api: client.ApiClient,
    namespace: str,
    world: Aws,
    kubeconfig: Path,
    gemini: FakeGemini,
    tmp_path: Path,
) -> None:
    # With a Gemini key configured, such a policy used to be decided by Gemini.
    create_policy(api, namespace, "payments-by-hand", PAYMENTS_BY_HAND)
    env = operator_env(
        kubeconfig, world, GEMINI_API_KEY=new_token(), GEMINI_BASE_URL=gemini.base_url
    )
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    try:
        status, answer = await post(
            api, namespace, "/alert", generic_alert("payments", severity="critical")
        )
        assert status == 200, answer
        incident = settled(api, namespace, answer["incidents"][0]["name"], "Escalated")
    finally:
        process.stop()
    assert incident["status"]["assessment"]["assessor"] == "rules"
    assert gemini.requests == []


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (
            {"rules": [{"action": "restart_service"}], "allowedActions": ["notify_team"]},
            "can never apply",
        ),
        (
            {"rules": [{"action": "ignore"}, {"action": "notify_team", "severities": ["high"]}]},
            "must be the last rule",
        ),
    ],
)
def test_the_api_server_refuses_a_policy_whose_rules_can_never_apply(
    api: client.ApiClient, namespace: str, spec: dict[str, Any], says: str
) -> None:
    with pytest.raises(client.ApiException) as refused:
        create_policy(api, namespace, "never", spec)
    assert refused.value.status == 422
    assert says in refused.value.body


async def test_hidden_characters_never_reach_a_name(api: client.ApiClient, namespace: str) -> None:
    # `billing\0worker` reached DescribeServices; U+202E made `kubectl get`
    # show the cluster `dorp-tsae` as `east-prod`.
    alert = generic_alert("billing\x00worker", incident_id="hidden")
    alert["detail"]["Trigger"]["Dimensions"][1]["value"] = "\u202edorp-tsae\u202c"
    status, answer = await post(api, namespace, "/alert", alert)
    assert status == 200, answer
    incident = get_incident(api, namespace, answer["incidents"][0]["name"])
    assert incident["spec"]["service"]["name"] == "billingworker"
    assert incident["spec"]["service"]["cluster"] == "dorp-tsae"


def test_the_api_server_refuses_hidden_characters_in_a_name(
    api: client.ApiClient, namespace: str
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Incident",
        "metadata": {"name": "spoofed"},
        "spec": {
            "source": "generic",
            "fingerprint": "spoofed",
            "title": "spoofed",
            "service": {"name": "checkout", "cluster": "\u202edorp-tsae\u202c"},
            "alarm": {"name": "spoofed"},
        },
    }
    with pytest.raises(client.ApiException) as refused:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "incidents", body
        )
    assert refused.value.status == 422
    assert "spec.service.cluster" in refused.value.body


async def test_a_long_service_name_is_kept_whole_or_refused(
    api: client.ApiClient, namespace: str
) -> None:
    long = "s" * 300  # was cut to 256 with an ellipsis: two services could become one
    status, answer = await post(api, namespace, "/alert", generic_alert(long, incident_id="l1"))
    assert status == 200, answer
    incident = get_incident(api, namespace, answer["incidents"][0]["name"])
    assert incident["spec"]["service"]["name"] == long

    status, answer = await post(
        api, namespace, "/alert", generic_alert("s" * 1025, incident_id="l2")
    )
    assert status == 422 and "refused rather than cut" in answer["message"]
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "incidents"
    )
    assert len(listed["items"]) == 1


async def test_a_recovery_cancels_the_pending_approval(
    api: client.ApiClient, namespace: str, world: Aws, operator: OperatorProcess
) -> None:
    # A Resolved Incident showed `approval.state: Pending` for ever.
    alarm = eventbridge_alarm(
        "payments-cpu-sev2", service="payments", cluster="demo", region=REGION
    )
    status, answer = await post(api, namespace, "/alerts/cloudwatch", alarm)
    assert status == 200, answer
    name = answer["incidents"][0]["name"]
    waiting = settled(api, namespace, name, "AwaitingApproval")
    assert waiting["status"]["approval"]["target"] == f"{REGION}/demo/payments"
    assert waiting["status"]["approval"]["action"] == "restart_service"

    ok = eventbridge_alarm(
        "payments-cpu-sev2", state="OK", service="payments", cluster="demo", region=REGION
    )
    status, answer = await post(api, namespace, "/alerts/cloudwatch", ok)
    assert status == 200, answer
    resolved = settled(api, namespace, name, "Resolved")
    assert resolved["status"]["approval"]["state"] == "Cancelled"
