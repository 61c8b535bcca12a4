"""`rollback_service`, and the ECS deployment history it reads.

moto lacks ECS's service deployments and revisions; the dev stack serves
them beside moto (devstack/ecs_deployments.py). The first tests hold that
extension to the shapes boto3 parses from real ECS; the others run the
plugin through the executor against it, with real boto3 clients.
"""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from aws_fixtures import REGION, Aws
from builders import incident
from incident_operator.models import IncidentSpec, RemediationPolicy
from incident_operator.remediate import ActionCall, ActionRefused, Target
from incident_operator.remediate.ecs import EcsClients
from incident_operator.remediate.executor import Executor
from incident_operator.remediate.plugin import Context

CHECKOUT = Target(region=REGION, cluster="demo", service="checkout")
ALARM = IncidentSpec.model_validate(incident()["spec"])
ACCOUNT = "123456789012"
TASK_DEFINITION = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/checkout"


# --- the deployment history beside moto ------------------------------------------


def test_an_update_to_another_task_definition_is_a_new_deployment(aws: Aws) -> None:
    aws.ecs_service(running=2)
    first = aws.primary()

    second = aws.deploy()

    ecs = aws.client("ecs", record=False)
    [service] = ecs.describe_services(cluster="demo", services=["checkout"])["services"]
    assert service["taskDefinition"] == second == f"{TASK_DEFINITION}:2"
    [deployment] = service["deployments"]
    assert deployment["status"] == "PRIMARY" and deployment["taskDefinition"] == second
    assert deployment["id"] != first["id"]
    assert deployment["createdAt"] >= first["createdAt"]
    assert deployment["id"] in deployment["rolloutStateReason"]


def test_service_deployments_and_revisions_in_ecs_shapes(aws: Aws) -> None:
    aws.ecs_service(running=2)
    aws.deploy(image="nginx:2")
    ecs = aws.client("ecs", record=False)

    listed = ecs.list_service_deployments(cluster="demo", service="checkout")
    newest, oldest = listed["serviceDeployments"]
    assert "nextToken" not in listed
    assert newest["createdAt"] >= oldest["createdAt"]  # newest first, as datetimes
    assert (newest["status"], oldest["status"]) == ("SUCCESSFUL", "SUCCESSFUL")
    prefix = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service-deployment/demo/checkout/"
    assert newest["serviceDeploymentArn"].startswith(prefix)
    assert newest["serviceArn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/demo/checkout"
    assert newest["clusterArn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/demo"
    assert isinstance(newest["finishedAt"], datetime)

    described = ecs.describe_service_deployments(
        serviceDeploymentArns=[newest["serviceDeploymentArn"], "arn:aws:ecs:nope"]
    )
    [deployment] = described["serviceDeployments"]
    assert described["failures"] == [{"arn": "arn:aws:ecs:nope", "reason": "MISSING"}]
    assert deployment["targetServiceRevision"]["arn"] == newest["targetServiceRevisionArn"]
    assert deployment["targetServiceRevision"]["requestedTaskCount"] == 2
    [source] = deployment["sourceServiceRevisions"]
    assert source["arn"] == oldest["targetServiceRevisionArn"]

    revisions = ecs.describe_service_revisions(
        serviceRevisionArns=[newest["targetServiceRevisionArn"], source["arn"]]
    )["serviceRevisions"]
    assert [r["taskDefinition"] for r in revisions] == [
        f"{TASK_DEFINITION}:2",
        f"{TASK_DEFINITION}:1",
    ]
    assert revisions[0]["containerImages"] == [{"containerName": "app", "image": "nginx:2"}]
    assert isinstance(revisions[0]["createdAt"], datetime)


def test_deployment_history_filters_pages_and_errors(aws: Aws) -> None:
    aws.ecs_service(running=0)  # its rollouts never complete in moto
    aws.deploy()
    ecs = aws.client("ecs", record=False)

    everything = ecs.list_service_deployments(cluster="demo", service="checkout")
    assert [d["status"] for d in everything["serviceDeployments"]] == ["IN_PROGRESS", "STOPPED"]
    assert "finishedAt" not in everything["serviceDeployments"][0]
    done = ecs.list_service_deployments(cluster="demo", service="checkout", status=["SUCCESSFUL"])
    assert done["serviceDeployments"] == []
    first = ecs.list_service_deployments(cluster="demo", service="checkout", maxResults=1)
    rest = ecs.list_service_deployments(
        cluster="demo", service="checkout", maxResults=1, nextToken=first["nextToken"]
    )
    assert (
        first["serviceDeployments"] + rest["serviceDeployments"]
        == (everything["serviceDeployments"])
    )
    for cluster, service, code in [
        ("demo", "nope", "ServiceNotFoundException"),
        ("nope", "checkout", "ClusterNotFoundException"),
    ]:
        with pytest.raises(ClientError) as raised:
            ecs.list_service_deployments(cluster=cluster, service=service)
        assert raised.value.response["Error"]["Code"] == code
    with pytest.raises(ClientError) as raised:
        ecs.describe_service_revisions(serviceRevisionArns=[f"arn:{n}" for n in range(21)])
    assert raised.value.response["Error"]["Code"] == "InvalidParameterException"


def test_a_reset_forgets_the_history(aws: Aws) -> None:
    aws.ecs_service(running=2)
    reset = urllib.request.Request(f"{aws.endpoint_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    aws.ecs_service(running=2)

    ecs = aws.client("ecs", record=False)
    listed = ecs.list_service_deployments(cluster="demo", service="checkout")
    assert len(listed["serviceDeployments"]) == 1


# --- the action --------------------------------------------------------------------


def executor(aws: Aws, *, clock: Any = None) -> Executor:
    ecs = EcsClients(ecs=aws.client("ecs"))
    context = Context(ecs=ecs) if clock is None else Context(ecs=ecs, clock=clock)
    return Executor(context=context, guard=None)


def rollback(incident_id: str = "default/a", **settings: Any) -> ActionCall:
    return ActionCall(
        action="rollback_service",
        parameters={},
        target=CHECKOUT,
        incident_id=incident_id,
        alarm=ALARM,
        settings={"rollback_service": settings},
    )


def task_definition(aws: Aws) -> str:
    ecs = aws.client("ecs", record=False)
    found: str = ecs.describe_services(cluster="demo", services=["checkout"])["services"][0][
        "taskDefinition"
    ]
    return found


async def test_a_rollback_goes_back_to_the_previous_completed_task_definition(
    aws: Aws,
) -> None:
    aws.ecs_service(running=2)
    aws.deploy(image="nginx:2")
    aws.deploy(image="nginx:3")
    # A forced restart of :3 is a deployment too, of the same task definition.
    aws.client("ecs", record=False).update_service(
        cluster="demo", service="checkout", forceNewDeployment=True
    )
    acting = executor(aws)

    receipt = await acting.execute(rollback(), limits=RemediationPolicy())
    again = await acting.execute(rollback(), limits=RemediationPolicy())

    assert receipt.ref == task_definition(aws) == f"{TASK_DEFINITION}:2"
    assert again.reused and again.ref == receipt.ref
    assert aws.count("ecs.UpdateService") == 1
    assert await acting.verify(rollback(), receipt=receipt.ref) == "Succeeded"
    # Someone deploys over the rollback: no longer ours to judge.
    aws.deploy(image="nginx:4")
    assert await acting.verify(rollback(), receipt=receipt.ref) == "Failed"


@pytest.mark.parametrize("history", ["created only", "restarted only"])
async def test_no_previous_deployment_is_refused(aws: Aws, history: str) -> None:
    aws.ecs_service(running=2)
    if history == "restarted only":
        aws.client("ecs", record=False).update_service(
            cluster="demo", service="checkout", forceNewDeployment=True
        )

    with pytest.raises(ActionRefused) as refused:
        await executor(aws).execute(rollback(), limits=RemediationPolicy())

    assert refused.value.reason == "NoPreviousDeployment"
    assert "no earlier completed deployment with another task definition than checkout:1" in (
        str(refused.value)
    )
    assert aws.count("ecs.UpdateService") == 0
    assert task_definition(aws) == f"{TASK_DEFINITION}:1"


async def test_a_deployment_older_than_the_policy_allows_is_not_rolled_back(aws: Aws) -> None:
    aws.ecs_service(running=2)
    aws.deploy()
    later = datetime.now(UTC) + timedelta(hours=7)

    with pytest.raises(ActionRefused) as refused:
        await executor(aws, clock=lambda: later).execute(
            rollback(maxDeploymentAgeHours=6), limits=RemediationPolicy()
        )

    assert refused.value.reason == "DeploymentTooOld"
    assert "more than 6 h ago" in str(refused.value)
    assert aws.count("ecs.UpdateService") == 0
    # Within the default (24 h) the same rollback goes ahead.
    receipt = await executor(aws, clock=lambda: later).execute(
        rollback("default/b"), limits=RemediationPolicy()
    )
    assert receipt.ref == f"{TASK_DEFINITION}:1"
